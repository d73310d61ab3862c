"""prepare_data: 'loads' a dataset and reports its size."""
import argparse
import os

import task_context as mlg

parser = argparse.ArgumentParser()
parser.add_argument("--dataset", required=True)
args = parser.parse_args()

rows = 1000 + sum(map(ord, args.dataset)) % 1000
print(f"preparing dataset {args.dataset}: {rows} rows", flush=True)
mlg.log_params({"dataset": args.dataset})
mlg.log_metrics(0, {"rows": rows})
mlg.set_tags({"stage": "prepare", "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", "")})
print("done", flush=True)
