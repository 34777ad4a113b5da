"""Spawn-form render time with 30 courses and 16 simulated GPUs (target: median <= 20 ms).

Two figures:
- the form alone: GPUDockerSpawner's options form (course catalog + GPU snapshot + allocator view +
  Jinja), rendered in-process the way the hub calls it;
- the whole page: GET /hub/spawn through a real hub and proxy as a logged-in student (form + hub
  page).

    .venv/bin/python benchmarks/form_render.py [--courses 30] [--gpus 16] [--runs 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time

import requests
import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.integration.hub import TEST_IMAGE, Hub, simulated_gpus


def write_courses(directory, n):
    os.makedirs(directory, exist_ok=True)
    for i in range(n):
        data = {
            "id": f"course-{i:02d}",
            "title": f"Course {i}: GPU computing, part {i}",
            "description": "Lectures and labs. " * 5,
            "images": [
                {"key": f"img{j}", "image": TEST_IMAGE, "label": f"Image {j}"} for j in range(3)
            ],
            "gpus": {
                "default": 1,
                "max": 2,
                "policy": "shared" if i % 3 == 0 else "exclusive",
                "max_users_per_gpu": 2,
            },
            "resources": {"mem_limit": "8G", "cpu_limit": 2},
            "env": {"COURSE": str(i)},
        }
        with open(os.path.join(directory, f"course-{i:02d}.yaml"), "w") as f:
            yaml.safe_dump(data, f)


def stats(samples):
    samples = sorted(samples)
    return {
        "median_ms": statistics.median(samples) * 1000,
        "p95_ms": samples[int(len(samples) * 0.95) - 1] * 1000,
    }


def bench_in_process(courses_dir, gpus_file, runs):
    from types import SimpleNamespace

    from jupyter_gpuspawn.spawner import GPUDockerSpawner

    user = SimpleNamespace(
        name="student", groups=[], admin=False, url="/user/student/", escaped_name="student"
    )
    spawner = GPUDockerSpawner(
        user=user, courses_dir=courses_dir, gpu_inventory="simulated", simulated_gpus=gpus_file
    )
    spawner._ensure_reconciled = lambda: asyncio.sleep(0)  # no Docker needed for the form itself

    async def run():
        await spawner.render_options_form()  # warm: file reads, template compile
        samples = []
        for _ in range(runs):
            t0 = time.perf_counter()
            html = await spawner.render_options_form()
            samples.append(time.perf_counter() - t0)
        return samples, len(html)

    samples, size = asyncio.run(run())
    return dict(stats(samples), html_bytes=size)


def bench_hub_page(courses_dir, gpus, runs):
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        hub = Hub(
            tmp, gpus, extra_config=f"c.GPUDockerSpawner.courses_dir = {courses_dir!r}\n"
        ).start()
        try:
            s = requests.Session()
            s.get(f"{hub.url}/hub/login")
            r = s.post(
                f"{hub.url}/hub/login",
                data={"username": "student", "password": "x", "_xsrf": s.cookies.get("_xsrf", "")},
            )
            r.raise_for_status()
            s.get(f"{hub.url}/hub/spawn").raise_for_status()  # warm
            samples = []
            for _ in range(runs):
                t0 = time.perf_counter()
                r = s.get(f"{hub.url}/hub/spawn")
                samples.append(time.perf_counter() - t0)
                assert "gpuspawn-form" in r.text
            return stats(samples)
        finally:
            hub.stop()


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--courses", type=int, default=30)
    parser.add_argument("--gpus", type=int, default=16)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        courses_dir = os.path.join(tmp, "courses")
        write_courses(courses_dir, args.courses)
        gpus = simulated_gpus(args.gpus)
        gpus_file = os.path.join(tmp, "gpus.yaml")
        with open(gpus_file, "w") as f:
            yaml.safe_dump(gpus, f)
        form = bench_in_process(courses_dir, gpus_file, args.runs)
        page = bench_hub_page(courses_dir, gpus, min(args.runs, 100))
    print(f"\nSpawn form, {args.courses} courses, {args.gpus} simulated GPUs")
    print(
        f"  form render (in-process): median {form['median_ms']:.2f} ms, p95 {form['p95_ms']:.2f} "
        f"ms "
        f"({form['html_bytes']} bytes)  target: median <= 20 ms"
    )
    print(
        f"  GET /hub/spawn (whole page through hub + proxy): median {page['median_ms']:.2f} ms, "
        f"p95 {page['p95_ms']:.2f} ms"
    )
    return {"form": form, "page": page}


if __name__ == "__main__":
    main()
