"""Stream one chat completion from the daemon on 127.0.0.1:8080 and print its figures.

Runs inside the test container on the system python3 (standard library only), so
the client's own start-up is not part of the figures. Arguments: model id, number
of tokens to generate. Prints one JSON line: time to first token, tokens, decode
tokens/s (after the first token) and the whole request's time.
"""

import json
import sys
import time
import urllib.request

model, tokens = sys.argv[1], int(sys.argv[2])
body = {
    "model": model,
    "messages": [{"role": "user", "content": "Write a long story about a robot."}],
    "max_tokens": tokens,
    "temperature": 0,
    "ignore_eos": True,
    "stream": True,
    "stream_options": {"include_usage": True},
}
request = urllib.request.Request(
    "http://127.0.0.1:8080/v1/chat/completions",
    data=json.dumps(body).encode(),
    headers={"Content-Type": "application/json"},
)
start = time.monotonic()
first = last = None
usage = {}
with urllib.request.urlopen(request, timeout=900) as response:
    for raw in response:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[len("data: ") :])
        usage = chunk.get("usage") or usage
        if any(c.get("delta", {}).get("content") for c in chunk.get("choices", [])):
            last = time.monotonic()
            first = first or last
done = time.monotonic()
generated = usage.get("completion_tokens", 0)
if first is None or generated < 2:
    sys.exit(f"no streamed tokens (usage {usage})")
figures = {
    "ttft_s": round(first - start, 2),
    "completion_tokens": generated,
    "prompt_tokens": usage.get("prompt_tokens"),
    "decode_tok_s": round((generated - 1) / max(last - first, 1e-6), 2),
    "total_s": round(done - start, 2),
}
print(json.dumps(figures))
