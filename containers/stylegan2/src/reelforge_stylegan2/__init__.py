"""ReelForge StyleGAN2 container: dataset prep, training wrapper, TorchScript export, batch generation.

Runs under SageMaker's training and processing contracts and knows nothing about Airflow. The code
stays Python 3.8 compatible: the image is built on NVIDIA's PyTorch 20.12 container, the base that
NVlabs' stylegan2-ada-pytorch is tested on.
"""

__version__ = "0.1.0"
