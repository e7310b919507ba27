"""The Airflow UI as a user meets it, in headless Chromium against the local Airflow (``airflow standalone``).

* the SR DAG from its trigger form to a finished run, its extra links, and the delivered video and preview
  those links open (served by the local S3 endpoint);
* every DAG's docs and trigger form open without an error or an empty page.

Screenshots go to ``out/browser/`` (see ``conftest.artifacts``).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest
import requests

from tests.media_utils import make_clip, probe

pytestmark = [pytest.mark.stack, pytest.mark.slow]

SR_DAG = "video_super_resolution"
INGEST = "reelforge-ingest"
UI = "http://127.0.0.1:8080"
EXPECTED_LINKS = ("Slurm job", "Output (S3)", "Delivered video", "Report", "Preview image", "Previews (S3)")


def wait_css(driver: Any, css: str, timeout: float = 60, *, clickable: bool = False) -> Any:
    """The first element matching ``css`` once it is displayed (and enabled with ``clickable``)."""
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    cond = ec.element_to_be_clickable if clickable else ec.visibility_of_element_located
    return WebDriverWait(driver, timeout).until(cond(("css selector", css)))


def wait_text(driver: Any, pattern: str, timeout: float = 60) -> str:
    """The page's visible text once it matches ``pattern`` (a regex)."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = driver.find_element("tag name", "body").text
        if re.search(pattern, text):
            return text
        time.sleep(0.5)
    raise AssertionError(f"{pattern!r} not on {driver.current_url} within {timeout:.0f}s; page text: {text[:1500]}")


def assert_no_error(driver: Any, what: str) -> None:
    """No error alert, no crash page and some content."""
    errors = [e.text for e in driver.find_elements("css selector", "[data-testid=error-alert]") if e.is_displayed()]
    assert not errors, f"{what}: error shown: {errors}"
    text = driver.find_element("tag name", "body").text
    assert not re.search(r"Something went wrong|Page Not Found|Dag Not Found|Unexpected Application Error", text), \
        f"{what}: {text[:1000]}"
    assert len(text.strip()) > 40, f"{what}: empty page ({text!r})"


def choose(driver: Any, param: str, option: str) -> None:
    """Pick ``option`` in the form's select for ``param`` (type it into the combobox, press Enter)."""
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element("xpath", f"//input[@name='element_{param}']/ancestor::div"
                                       "[.//input[@role='combobox']][1]//input[@role='combobox']")
    box.click()
    box.send_keys(option)
    time.sleep(0.5)
    box.send_keys(Keys.ENTER)
    chosen = driver.find_element("css selector", f"input[name=element_{param}]").get_attribute("value")
    assert chosen == option, f"{param}: {chosen!r} chosen, not {option!r}"


def shot(driver: Any, artifacts: Path, name: str) -> Path:
    path = artifacts / f"{name}.png"
    assert driver.save_screenshot(str(path)), f"screenshot {path} failed"
    return path


def task_log(airflow: Any, dag_id: str, run_id: str, task_id: str) -> str:
    """Every try's log of a task instance, as text (the structured entries the UI shows)."""
    ti = airflow.api("GET", f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}")
    parts = []
    for attempt in range(1, int(ti["try_number"]) + 1):
        got = airflow.api("GET", f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}/logs/"
                                 f"{attempt}", params={"full_content": "true"}, headers={"Accept": "application/json"})
        parts.append(json.dumps(got.get("content")))
    return "\n".join(parts)


def extra_links(driver: Any, timeout: float = 60) -> dict[str, str]:
    """Name → href of the task page's extra link buttons, once all :data:`EXPECTED_LINKS` are shown."""
    deadline = time.monotonic() + timeout
    found: dict[str, str] = {}
    while time.monotonic() < deadline:
        found = {a.text.strip(): a.get_attribute("href") for a in driver.find_elements("css selector", "a[href]")
                 if a.text.strip() in EXPECTED_LINKS}
        if set(found) == set(EXPECTED_LINKS):
            return found
        time.sleep(1)
    raise AssertionError(f"extra links shown: {found}; expected {EXPECTED_LINKS}")


def test_sr_run_from_the_form_to_the_delivered_video(airflow, aws, browser, artifacts, shared_data, tmp_path):
    out = artifacts / "sr"
    out.mkdir(exist_ok=True)
    airflow.wait_for_dag(SR_DAG)
    airflow.unpause(SR_DAG)
    clip = make_clip(shared_data / "video" / "moviepy_doc_example2_bbb.mp4", tmp_path / "clip.mp4", tone=523)
    key = f"manual/browser/ui-{uuid.uuid4().hex[:6]}.mp4"  # outside the notified prefix: the form starts it
    aws.s3.put_object(Bucket=INGEST, Key=key, Body=clip.read_bytes())
    known = {r["dag_run_id"] for r in airflow.runs(SR_DAG)}

    # The trigger form: fill the source, submit.
    browser.get(f"{UI}/dags/{SR_DAG}")
    wait_css(browser, "[data-testid=trigger-dag-button]", clickable=True).click()
    source = wait_css(browser, "#element_source_uri")
    source.send_keys(f"s3://{INGEST}/{key}")
    choose(browser, "scale", "2")
    wait_text(browser, f"Trigger Dag - {SR_DAG}")
    assert_no_error(browser, "SR trigger form")
    assert source.get_attribute("value") == f"s3://{INGEST}/{key}"
    shot(browser, out, "01-trigger-form")
    wait_css(browser, "[data-testid=trigger-dag-submit]", clickable=True).click()
    run_id = airflow.wait_for_new_run(SR_DAG, known, timeout=60)
    conf = airflow.api("GET", f"/dags/{SR_DAG}/dagRuns/{quote(run_id, safe='')}")["conf"]
    assert conf["source_uri"] == f"s3://{INGEST}/{key}" and conf["scale"] == 2, conf

    # The run page while it works, then finished.
    run_url = f"{UI}/dags/{SR_DAG}/runs/{quote(run_id, safe='')}"
    browser.get(run_url)
    wait_text(browser, re.escape(run_id[:20]))
    shot(browser, out, "02-run-started")
    state = airflow.wait_for_run(SR_DAG, run_id, timeout=900)
    assert state == "success", airflow.task_states(SR_DAG, run_id)
    browser.get(run_url)
    wait_text(browser, r"(?i)\bsuccess\b")
    wait_text(browser, "assemble_and_deliver")
    assert_no_error(browser, "finished run")
    shot(browser, out, "03-run-finished")

    # Progress and the Slurm job's detail are in the task logs the run page shows.
    assert re.search(r"\d+ of \d+ tasks done \(\d+%\)", task_log(airflow, SR_DAG, run_id, "upscale_segments"))
    assemble_log = task_log(airflow, SR_DAG, run_id, "assemble_and_deliver")
    assert re.search(r"::group::Slurm job \d+: scontrol / sacct", assemble_log), assemble_log[-2000:]
    assert "$ scontrol show job" in assemble_log, assemble_log[-2000:]

    # The delivering task's extra links, built from the run's delivery record.
    browser.get(f"{run_url}/tasks/assemble_and_deliver/details")
    wait_text(browser, "Extra Links")
    links = extra_links(browser)
    assert_no_error(browser, "assemble_and_deliver task page")
    shot(browser, out, "04-extra-links")
    bucket, _, video = unquote(urlsplit(links["Delivered video"]).path).lstrip("/").partition("/")
    assert bucket == "reelforge-output" and video.startswith("sr/") and video.endswith(".mp4"), video
    prefix = video.rsplit("/", 1)[0] + "/"
    assert parse_qs(urlsplit(links["Output (S3)"]).query)["prefix"] == [prefix]
    assert unquote(urlsplit(links["Report"]).path) == f"/{bucket}/{prefix}report.json"
    assert links["Slurm job"].startswith(f"{UI}/dags/{SR_DAG}/runs/")

    # Follow them: the delivered video and the preview image come back as delivered.
    body = requests.get(links["Delivered video"], timeout=30)
    assert body.status_code == 200
    assert body.content == aws.s3.get_object(Bucket="reelforge-output", Key=video)["Body"].read()
    delivered = tmp_path / "delivered.mp4"
    delivered.write_bytes(body.content)
    source_video = next(st for st in probe(clip)["streams"] if st["codec_type"] == "video")
    output_video = next(st for st in probe(delivered)["streams"] if st["codec_type"] == "video")
    assert int(output_video["width"]) == 2 * int(source_video["width"]), "the form's scale 2 was not applied"
    report = json.loads(aws.s3.get_object(Bucket="reelforge-output", Key=prefix + "report.json")["Body"].read())
    assert requests.get(links["Report"], timeout=30).json() == report
    browser.get(links["Delivered video"])
    time.sleep(2)
    shot(browser, out, "05-delivered-video")
    browser.get(links["Preview image"])
    width = 0
    for _ in range(20):
        width = browser.execute_script("const i = document.images[0]; return i && i.complete ? i.naturalWidth : 0;")
        if width:
            break
        time.sleep(0.5)
    assert width > 0, f"the preview at {links['Preview image']} did not load as an image"
    shot(browser, out, "06-preview-image")
    browser.get(links["Previews (S3)"])
    wait_text(browser, r"previews/")
    shot(browser, out, "07-previews-listing")
    browser.get(links["Slurm job"])  # the task log, with the job's scontrol / sacct section
    wait_text(browser, r"Slurm job \d+: scontrol / sacct")
    section = browser.find_element("xpath", "//*[text()[contains(., 'scontrol / sacct')]]")  # the group header
    section.click()
    wait_text(browser, r"JobState=COMPLETED")
    assert_no_error(browser, "Slurm job link (the task log)")
    shot(browser, out, "08-slurm-job-log")


def test_every_dag_has_docs_and_a_trigger_form(airflow, browser, artifacts):
    out = artifacts / "dags"
    out.mkdir(exist_ok=True)
    airflow.wait_for_dag(SR_DAG)
    errors = airflow.api("GET", "/importErrors")["import_errors"]
    assert not errors, [(e["filename"], e["stack_trace"][-500:]) for e in errors]
    dag_files = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "dags").glob("*.py"))
    dags = sorted(d["dag_id"] for d in airflow.api("GET", "/dags", params={"limit": 100})["dags"])
    assert SR_DAG in dags and len(dags) >= len(dag_files), (dags, dag_files)
    for dag_id in dags:
        browser.get(f"{UI}/dags/{dag_id}")
        wait_css(browser, "[data-testid=trigger-dag-button]", clickable=True)
        assert_no_error(browser, f"{dag_id} page")

        doc_md = airflow.api("GET", f"/dags/{dag_id}/details").get("doc_md") or ""
        heading = next((ln.lstrip("#").strip() for ln in doc_md.splitlines() if ln.strip()), "")
        assert heading, f"{dag_id} has no docs (doc_md)"
        wait_css(browser, "[data-testid=markdown-button]", clickable=True).click()
        docs = wait_css(browser, "div.chakra-dialog__content[data-state=open]")
        wait_text(browser, re.escape(heading.replace("**", "").replace("`", "")[:40]), timeout=20)
        assert docs.text.startswith("Dag Documentation") and len(docs.text.strip()) > 80, \
            f"{dag_id}: docs empty or too short: {docs.text!r}"
        assert_no_error(browser, f"{dag_id} docs")
        shot(browser, out, f"{dag_id}-docs")

        browser.get(f"{UI}/dags/{dag_id}")
        wait_css(browser, "[data-testid=trigger-dag-button]", clickable=True).click()
        wait_css(browser, "[data-testid=trigger-dag-submit]")
        wait_text(browser, f"Trigger Dag - {re.escape(dag_id)}")
        assert_no_error(browser, f"{dag_id} trigger form")
        shot(browser, out, f"{dag_id}-trigger-form")
        # with its defaults the form can be submitted: an optional field left empty is not "required"
        from selenium.common.exceptions import TimeoutException

        try:
            wait_css(browser, "[data-testid=trigger-dag-submit]", timeout=15, clickable=True)
        except TimeoutException:
            pytest.fail(f"{dag_id}: the trigger form cannot be submitted with its defaults")
