"""What strict decoding costs per client frame: qaex's DIFF decoder against msgspec's typed decode alone.

``decode_client_message`` decodes a frame into its bounded message type (the same msgspec decode as the
baseline, with the bounds of qaex/core/limits.py in the type) and then checks it for duplicate keys
(qaex/protocol/strict_json.py). The baseline is the bare ``msgspec.json.Decoder(ClientMessage).decode``
of the same frame, in the same run. Frames: TqSdk's insert_order (the frame every DIFF order is), a
cancel, and peek_message (the most frequent frame, which skips the duplicate check).

    python -m bench.decode [--rounds 7] [--number 100000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import statistics
import timeit

import msgspec

from qaex.protocol import diff

FRAMES = {
    "insert_order": (
        '{"aid":"insert_order","user_id":"u1","order_id":"PYSDK_insert_0123456789abcdef0123456789abcdef",'
        '"exchange_id":"SHFE","instrument_id":"cu2601","direction":"BUY","offset":"OPEN","volume":1,'
        '"price_type":"LIMIT","limit_price":86000.0,"time_condition":"GFD","volume_condition":"ANY"}'
    ),
    "cancel_order": '{"aid":"cancel_order","user_id":"u1","order_id":"PYSDK_insert_0123456789abcdef"}',
    "peek_message": '{"aid":"peek_message"}',
}


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--rounds", type=int, default=7, help="timing rounds; the median is reported")
    parser.add_argument("--number", type=int, default=100_000, help="decodes per round")
    args = parser.parse_args()
    bare = msgspec.json.Decoder(diff.ClientMessage)
    print(f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {platform.python_version()}, {platform.machine()}")
    print(f"{'frame':14} {'bytes':>6} {'msgspec µs':>11} {'qaex µs':>8} {'ratio':>6}")
    for name, frame in FRAMES.items():
        assert type(diff.decode_client_message(frame)) is type(bare.decode(frame))
        times = {}
        for label, decode in (("bare", bare.decode), ("qaex", diff.decode_client_message)):
            rounds = timeit.repeat(lambda d=decode, f=frame: d(f), number=args.number, repeat=args.rounds)
            times[label] = statistics.median(rounds) / args.number * 1e6
        ratio = times["qaex"] / times["bare"]
        print(f"{name:14} {len(frame):6} {times['bare']:11.2f} {times['qaex']:8.2f} {ratio:6.2f}")


if __name__ == "__main__":
    main()
