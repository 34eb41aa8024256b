"""A FastAPI app that loads a "model" when a worker starts: each worker holds MODEL_MIB
MiB of touched memory, as a worker that loads weights at import does. Served by gunicorn
with uvicorn workers in the end-to-end tests."""
import os

from fastapi import FastAPI

MIB = int(os.environ.get("MODEL_MIB", "150"))
weights = bytearray(MIB << 20)
for i in range(0, len(weights), 4096):
    weights[i] = 1

app = FastAPI()


@app.get("/health")
def health():
    return {"ok": True, "model_mib": MIB}
