"""The JavaScript client's decoding, in Node: JSON `packets` batches against `packet_columns`.

    .venv/bin/python benchmarks/bench_js_decode.py [--packets 50000] [--repeat 5]

`--packets` realistic records (`bench_encode.realistic`) are made into the batches a session
sends (at most 64 KiB each) in both formats; `benchmarks/js_decode.mjs` then turns them into
packet objects the way `leireye-client.js` does (`JSON.parse` of each message, against
`decodeColumns` + `packetsOf` of each frame) and prints packets per second (best of
`--repeat`), bytes per packet, and the ratio of the two rates in the same run.
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_encode import realistic
from leireye.web.columns import column_batches
from leireye.web.encode import batch_messages, encode_packets

MAX_BYTES = 65536


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--packets", type=int, default=50000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    node = shutil.which("node")
    if node is None:
        print("bench_js_decode: no node: skipped", file=sys.stderr)
        return
    records = realistic(args.packets)
    texts = [t for t, _ in batch_messages(encode_packets(records), MAX_BYTES)]
    frames = [base64.b64encode(f).decode() for f, _ in column_batches(records, MAX_BYTES)]
    with tempfile.TemporaryDirectory() as tmp:
        batches = Path(tmp, "batches.json")
        batches.write_text(json.dumps({"json": texts, "columns": frames}))
        script = ROOT / "benchmarks" / "js_decode.mjs"
        subprocess.run([node, str(script), str(batches), str(args.repeat)], check=True, timeout=300)


if __name__ == "__main__":
    main()
