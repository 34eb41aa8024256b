"""A client like the bug report's: `requests` against URL every 50 ms for SECONDS,
printing each connection error by its Python name."""
import sys
import time

import requests

url, seconds = sys.argv[1], float(sys.argv[2])
end = time.time() + seconds
while time.time() < end:
    try:
        requests.get(url, timeout=2)
    # A server killed mid-response cuts the body short (ChunkedEncodingError): also a
    # connection error to the user, and the client goes on, as the report's did.
    except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError) as e:
        cause = e.__context__ or e
        while cause.__context__ is not None:
            cause = cause.__context__
        print("error", type(cause).__name__, flush=True)
    time.sleep(0.05)
