"""A FastAPI app that loads a "model" when a worker starts: each worker holds MODEL_MIB
MiB of touched memory, as a worker that loads weights at import does; GET /load blocks the
event loop for LOAD_SECONDS. Served by gunicorn with uvicorn workers in the end-to-end
tests."""
import os
import time

from fastapi import FastAPI

MIB = int(os.environ.get("MODEL_MIB", "150"))
weights = bytearray(MIB << 20)
for i in range(0, len(weights), 4096):
    weights[i] = 1

app = FastAPI()


@app.get("/health")
def health():
    return {"ok": True, "model_mib": MIB}


@app.get("/load")
async def load():
    # A model loaded on the event loop, blocking it (a slow disk, a big checkpoint): the
    # worker stops telling the master it is alive, and past --timeout the master kills it.
    time.sleep(float(os.environ.get("LOAD_SECONDS", "60")))
    return {"loaded": True}
