"""Locust users for the app's load test: each user is one browser session (a gradio_client Client) that submits
zoo-model diffusion runs (/run_diffusion) one after another and records, per run, the time to the first streamed
update, the time to the end, and what a refused run (the bounded queue is full) gets back.

Run it through tests/load/run_load.py (starts `python app.py`, 20 users for 2 minutes, writes the table). By hand:
    DECODING_LENS_LOAD_MODEL=<zoo folder or name> DECODING_LENS_LOAD_OUT=runs.jsonl \\
        locust -f tests/load/locustfile.py --headless -u 20 -r 20 -t 2m --host http://127.0.0.1:7860/
"""

from __future__ import annotations

import json
import os
import time

from gradio_client import Client
from gradio_client.exceptions import AppError
from gradio_client.utils import QueueError
from locust import User, between, events, task

MODEL = os.environ.get("DECODING_LENS_LOAD_MODEL", "tiny-dllm")
OUT = os.environ.get("DECODING_LENS_LOAD_OUT", "load-runs.jsonl")
# A short problem and the app's default settings for it: about what one click of Run does.
ARGS = {"prompt": "12+7-5*3=?", "strategy": "low_confidence", "gen_length": 64, "steps": 32, "block_length": 32,
        "temperature": 0.0, "seed": 0, "batch": 1}
RECORDS: list[dict] = []


class DiffusionUser(User):
    wait_time = between(0.5, 1.5)

    def on_start(self) -> None:
        self.client = Client(self.host, verbose=False)

    @task
    def run_diffusion(self) -> None:
        t0 = time.monotonic()
        record: dict = {"t": time.time()}
        first = None
        try:
            job = self.client.submit(model=MODEL, **ARGS, api_name="/run_diffusion")
            while not job.done():
                if first is None and job.outputs():
                    first = time.monotonic()
                time.sleep(0.02)
            final = job.result()
            if first is None:
                first = time.monotonic()
            status = str(final[4])  # /run_diffusion: canvas, entropy, top-k, order, status, scrubber, file
            record.update(outcome="done" if "done" in status else "message", status=status[:200],
                          first_s=first - t0, total_s=time.monotonic() - t0, updates=len(job.outputs()))
        except QueueError as e:  # the bounded queue refused the run: what a gradio_client user is told
            record.update(outcome="rejected", message=str(e), total_s=time.monotonic() - t0)
        except (AppError, Exception) as e:
            record.update(outcome="error", message=f"{type(e).__name__}: {e}"[:300], total_s=time.monotonic() - t0)
        RECORDS.append(record)
        kind = record["outcome"]
        events.request.fire(request_type="run_diffusion", name=kind, response_time=record["total_s"] * 1000,
                            response_length=0, exception=None if kind in ("done", "rejected") else
                            RuntimeError(record.get("message") or record.get("status")), context={})


@events.quitting.add_listener
def _dump(environment, **_kwargs) -> None:
    with open(OUT, "w") as f:
        f.writelines(json.dumps(record) + "\n" for record in RECORDS)
