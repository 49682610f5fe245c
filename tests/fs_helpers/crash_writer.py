"""Child process of the crash test: writes files and messages forever, acknowledging each after commit.

Usage: python crash_writer.py DB ROUND SEED

Prints ``READY pid`` once open, then one line per committed write, flushed
only after the write's transaction has committed:

    FILE path sha256
    MSG pid seq content
    APPEND path line
    OVER path old-sha256 new-sha256    (a file replaced: its old content must be a version)

The parent kills this process with SIGKILL at a random moment and checks that
every acknowledged write is in the database.
"""

from __future__ import annotations

import hashlib
import random
import sys

from llmos_shell.fs import Filesystem


def main() -> None:
    db, round_no, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    fs = Filesystem.open(db)
    pid = fs.create_process(f"crash round {round_no}", model="none")
    out = sys.stdout
    out.write(f"READY {pid}\n")
    out.flush()
    base = f"/crash/r{round_no:03d}"
    i = 0
    while True:
        i += 1
        choice = rng.random()
        if choice < 0.35:
            path = f"{base}/f{i}.bin"
            data = rng.randbytes(rng.randrange(0, 30_000))
            fs.write(path, data)
            acks = [f"FILE {path} {hashlib.sha256(data).hexdigest()}"]
        elif choice < 0.65:
            content = f"round {round_no} message {i} " + "word " * rng.randrange(0, 50)
            seq = fs.add_message(pid, rng.choice(["user", "assistant"]), content, tokens=i)
            acks = [f"MSG {pid} {seq} {content}"]
        elif choice < 0.85:
            acks = []
            with fs.transaction():
                for j in range(rng.randrange(2, 8)):
                    path = f"{base}/batch{i}/t{j}.txt"
                    text = f"batch {i} item {j} " * rng.randrange(1, 200)
                    fs.write(path, text)
                    acks.append(f"FILE {path} {hashlib.sha256(text.encode()).hexdigest()}")
                content = f"round {round_no} batch {i} done"
                seq = fs.add_message(pid, "tool", content)
                acks.append(f"MSG {pid} {seq} {content}")
            # acknowledged only now, after the commit
        elif choice < 0.93:
            # a file replaced again and again: each replaced content must be kept as a version
            path = f"{base}/v{rng.randrange(3)}.txt"
            old = fs.stat(path)["sha256"] if fs.exists(path) else "-"
            data = rng.randbytes(rng.randrange(1, 5000))
            fs.write(path, data)
            acks = [f"OVER {path} {old} {hashlib.sha256(data).hexdigest()}"]
        else:
            path = f"{base}/log.txt"
            fs.write(path, f"line {i}\n", append=True)
            acks = [f"APPEND {path} line {i}"]
        out.write("\n".join(acks) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
