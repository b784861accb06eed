"""How long ``parse_judgment`` takes on adversarial inputs of n, 2n, 4n and 8n characters.

A linear parser shows ratios near 2 between neighbouring sizes (a quadratic one near 4). Sizes are
measured interleaved (every family at every size, repeated, best time kept) so that other load on the
machine distorts neighbouring sizes alike.

    PYTHONPATH=src python benchmarks/parse_score.py [--n 25000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import random
import time

from srscale.judging import parse_judgment


def _repeat(piece: str, n: int) -> str:
    return (piece * (n // len(piece) + 1))[:n]


def _random(pieces: list[str], n: int, seed: int) -> str:
    rng = random.Random(seed)
    out: list[str] = []
    size = 0
    while size < n:
        out.append(rng.choice(pieces))
        size += len(out[-1])
    return "".join(out)[:n]


FAMILIES = {
    "Score runs": lambda n: _repeat("Score", n),
    "Score: heads": lambda n: _repeat("Score: ", n),
    "**Score:** heads": lambda n: _repeat("**Score:** ", n),
    "Score: + spaces": lambda n: "Score:" + " " * n,
    "Score: 4 + spaces + to": lambda n: "Score: 4" + " " * n + "to",
    "digits": lambda n: "1" * n,
    "slashes": lambda n: "/" * n,
    "stars": lambda n: "*" * n,
    "newlines + Score: 4": lambda n: "\n" * n + "Score: 4",
    "1/5 fractions": lambda n: _repeat("1/5 ", n),
    "negated 5/5": lambda n: _repeat("it does not deserve a 5/5 ", n),
    "e.g. examples": lambda n: _repeat("e.g. Score: 3 ", n),
    "cut ranges": lambda n: _repeat("Score: 4 to ", n),
    "random symbols": lambda n: _random(["Score", " ", "1", "5", "/", "*", "\n", ":", "-", "."], n, 0),
    "random words": lambda n: _random(["score", ": ", "4", "/5", "**", "\n", " not ", " if ", "e.g. ", '"'],
                                      n, 1),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=25_000, help="smallest size in characters")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sizes = [args.n, 2 * args.n, 4 * args.n, 8 * args.n]
    texts = {(name, n): make(n) for name, make in FAMILIES.items() for n in sizes}
    best = {key: float("inf") for key in texts}
    for _ in range(args.repeats):
        for key, text in texts.items():  # interleaved: every family at every size in each round
            start = time.perf_counter()
            parse_judgment(text)
            best[key] = min(best[key], time.perf_counter() - start)
    head = "".join(f"{n:>11,}" for n in sizes)
    print(f"{'input family':24}{head}   ratios 2n/n 4n/2n 8n/4n   (ms, best of {args.repeats})")
    for name in FAMILIES:
        times = [best[(name, n)] for n in sizes]
        pairs = zip(times, times[1:], strict=False)
        ratios = " ".join(f"{b / a:5.2f}" if a > 0 else "    -" for a, b in pairs)
        print(f"{name:24}" + "".join(f"{t * 1000:11.2f}" for t in times) + f"   {ratios}")


if __name__ == "__main__":
    main()
