"""A tensor-parallel rank other than 0. LLM(..., tensor_parallel_size=N) starts N - 1 of these
itself (this interpreter, this package); they are not meant to be run by hand."""
import argparse
import sys

from . import _core


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="nanovllm._worker")
    parser.add_argument("--control", required=True, help="rank 0's control channel")
    parser.add_argument("--rank", type=int, required=True)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    sys.exit(_core._run_worker(args.control, args.rank))


if __name__ == "__main__":
    main()
