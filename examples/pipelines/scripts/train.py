"""train_model: a toy training loop that logs loss/accuracy per epoch and saves a model artifact."""
import json
import math
import os
import time

import task_context as mlg

p = mlg.params()
lr = float(p.get("lr", 0.01))
epochs = int(p.get("epochs", 3))
seed = int(os.environ.get("TRAIN_SEED", "0"))
start = (mlg.checkpoint() or {}).get("epoch", 0)
print(f"training lr={lr} epochs={epochs} seed={seed} from epoch {start} on GPUs [{os.environ.get('CUDA_VISIBLE_DEVICES', '')}]", flush=True)
mlg.log_params({"seed": seed, "optimizer": "sgd"})
mlg.set_tags({"cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", "")})
accuracy = 0.5
for epoch in range(start, epochs):
    loss = 1.0 / (1 + epoch * lr * 50)
    accuracy = 0.95 - 0.4 * math.exp(-(epoch + 1))
    mlg.log_metrics(epoch, {"loss": loss, "accuracy": accuracy})
    print(f"epoch {epoch}: loss={loss:.4f} accuracy={accuracy:.4f}", flush=True)
    time.sleep(float(os.environ.get("TRAIN_EPOCH_SECONDS", "0.05")))
model = json.dumps({"kind": "toy-churn", "lr": lr, "epochs": epochs, "accuracy": accuracy}).encode()
try:
    mlg.upload_artifact("model/model.json", model)
    print("saved model/model.json", flush=True)
except Exception as err:  # the server may run without an artifact store
    print(f"could not upload the model: {err}", flush=True)
