"""Command line.

  python -m fastnn bench [--full | --smoke] [--only W1,W3] [--out DIR]   the benchmark suite
  python -m fastnn demo [--epochs N] [--hidden H] [--samples N] [--float64]
"""
import argparse
import sys


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        from .bench.cli import main as bench_main
        return bench_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m fastnn", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("bench", help="the benchmark suite: fastnn beside NumPy, PyTorch and "
                                 "scikit-learn (python -m fastnn bench --help)")
    demo = sub.add_parser("demo", help="train an MLP on generated data and print samples/s")
    demo.add_argument("--epochs", type=int, default=5)
    demo.add_argument("--hidden", type=int, default=128)
    demo.add_argument("--samples", type=int, default=20_000)
    demo.add_argument("--lr", type=float, default=0.001)
    demo.add_argument("--float64", action="store_true", help="train in float64")
    args = parser.parse_args(argv)
    if args.command in (None, "demo"):
        from .demo import run

        if args.command is None:
            args = demo.parse_args([])
        for name, value in (("--epochs", args.epochs), ("--hidden", args.hidden),
                            ("--samples", args.samples)):
            if value < 1:
                parser.error(f"{name} must be a positive integer, got {value}")
        if not args.lr > 0:
            parser.error(f"--lr must be positive, got {args.lr}")
        run(hidden=args.hidden, n_samples=args.samples, epochs=args.epochs, lr=args.lr,
            dtype="float64" if args.float64 else "float32")
        return 0
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
