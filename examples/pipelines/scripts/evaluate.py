"""evaluate_model: fails (exit 1) below --min-accuracy, so no model is registered."""
import argparse
import sys

import task_context as mlg

parser = argparse.ArgumentParser()
parser.add_argument("--min-accuracy", type=float, required=True)
args = parser.parse_args()

accuracy = 0.91
mlg.log_params({"min_accuracy": args.min_accuracy})
mlg.log_metrics(0, {"test_accuracy": accuracy})
print(f"test accuracy {accuracy} (minimum {args.min_accuracy})", flush=True)
sys.exit(0 if accuracy >= args.min_accuracy else 1)
