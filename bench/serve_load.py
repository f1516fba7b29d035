#!/usr/bin/env python3
"""Load on `sa2va serve`: many concurrent clients on loopback; every answer must equal the answer
to the same request made alone. Prints throughput, latency percentiles and the server's memory.

    bench/serve_load.py --server build/sa2va --model MODEL_DIR [--image IMAGE] [--clients 64]
                        [--rounds 2] [--parallel 2] [--max-rss-growth-mb 512]

Client i sends, `rounds` times, request i % 16: a short text chat, or (every 8th client, with
--image) a teacher-forced segmentation of the image. Exit status 1 on any difference or error.
"""
import argparse
import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def memory_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of a process in MiB."""
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def requests_for(image_uri: str | None) -> list[dict]:
    bodies = []
    for i in range(16):
        if image_uri and i % 8 == 0:
            content = [{"type": "image_url", "image_url": {"url": image_uri}},
                       {"type": "text", "text": f"Please segment object {i}."}]
            bodies.append({"messages": [{"role": "user", "content": content}], "sa2va": {"answer": "Sure, [SEG]."}})
        else:
            bodies.append({"messages": [{"role": "user", "content": f"Question number {i}: what is it?"}],
                           "max_tokens": 8})
    return bodies


def answer_of(reply: dict) -> str:
    """What must not depend on the load: the text and every mask."""
    return json.dumps(reply.get("sa2va"), sort_keys=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", required=True, help="the sa2va program")
    parser.add_argument("--model", help="model folder")
    parser.add_argument("--image", help="an image for the segmentation requests")
    parser.add_argument("--tiny-fixture", action="store_true",
                        help="the tiny fixture model and its image ($SA2VA_FIXTURES, default ../shared/fixtures); "
                             "exit 77 (skip) without it, a failure under CI=true")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--max-rss-growth-mb", type=float, default=512)
    args = parser.parse_args()
    if args.tiny_fixture:
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        fixture = os.path.join(os.environ.get("SA2VA_FIXTURES", os.path.join(repo, "..", "shared", "fixtures")),
                               "sa2va-tiny")
        if not os.path.isdir(fixture):
            print(f"fixture {fixture} not found (set SA2VA_FIXTURES)", file=sys.stderr)
            return 1 if os.environ.get("CI") == "true" else 77
        args.model, args.image = fixture, os.path.join(fixture, "inputs", "image.png")
    if not args.model:
        parser.error("--model or --tiny-fixture is required")

    image_uri = None
    if args.image:
        with open(args.image, "rb") as f:
            image_uri = "data:image/png;base64," + base64.b64encode(f.read()).decode()
    port = free_port()
    command = [args.server] + (["--threads", str(args.threads)] if args.threads else []) + [
        "serve", "--model", args.model, "--port", str(port), "--parallel", str(args.parallel),
        "--queue", str(args.clients)]
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(1200):
            try:
                with urllib.request.urlopen(base + "/health", timeout=5):
                    break
            except OSError:
                if server.poll() is not None:
                    print("the server exited: " + server.stderr.read(), file=sys.stderr)
                    return 1
                time.sleep(0.1)
        url = base + "/v1/chat/completions"
        bodies = requests_for(image_uri)
        alone = []
        for body in bodies:
            status, reply = post(url, body)
            if status != 200:
                print(f"request alone failed: {status} {reply}", file=sys.stderr)
                return 1
            alone.append(answer_of(reply))
        rss_before, _ = memory_mb(server.pid)

        latencies, failures = [], []
        lock = threading.Lock()

        def client(i: int) -> None:
            for _ in range(args.rounds):
                start = time.perf_counter()
                status, reply = post(url, bodies[i % len(bodies)])
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.append(elapsed)
                    if status != 200:
                        failures.append(f"client {i}: HTTP {status} {reply}")
                    elif answer_of(reply) != alone[i % len(bodies)]:
                        failures.append(f"client {i}: the answer differs from the request made alone")

        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        rss_after, rss_peak = memory_mb(server.pid)
        latencies.sort()

        def percentile(p: float) -> float:
            return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))]

        summary = {
            "clients": args.clients, "requests": len(latencies), "parallel": args.parallel,
            "segmentation_requests": sum(1 for i in range(args.clients) if image_uri and i % 16 % 8 == 0) * args.rounds,
            "seconds": round(wall, 2), "requests_per_s": round(len(latencies) / wall, 2),
            "p50_ms": round(percentile(50) * 1000, 1), "p99_ms": round(percentile(99) * 1000, 1),
            "rss_mb_before": round(rss_before, 1), "rss_mb_after": round(rss_after, 1), "rss_mb_peak": round(rss_peak, 1),
            "failures": len(failures),
        }
        print(json.dumps(summary))
        for failure in failures[:10]:
            print(failure, file=sys.stderr)
        if rss_after - rss_before > args.max_rss_growth_mb:
            print(f"server memory grew by {rss_after - rss_before:.0f} MiB under load", file=sys.stderr)
            return 1
        return 1 if failures else 0
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    sys.exit(main())
