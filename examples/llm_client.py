# /// script
# requires-python = ">=3.11"
# dependencies = ["openai>=1.40"]
# ///
"""Ask the local vLLM (Nemotron-3-Nano) one question, the way the voice bot does.

    uv run examples/llm_client.py "Hello!"                      # thinking off (server default)
    uv run examples/llm_client.py "Hello!" --stream --reasoning # stream, thinking on
    uv run examples/llm_client.py "Hello!" --url http://spark.local:8000/v1 --model nemotron-3-nano

A standalone script: `uv run` reads the metadata block above and runs it with only the `openai`
package, from any directory, without this project installed.

Thinking is a per-request chat-template switch (`chat_template_kwargs.enable_thinking`, sent
through the OpenAI SDK's `extra_body`); it is sent explicitly either way, because the template
itself defaults to thinking on. vLLM returns reasoning as `reasoning` (llama.cpp's server as
`reasoning_content`); both are read. Reasoning is printed on stderr prefixed with "[reasoning]",
the answer on stdout, so scripts can capture just the answer. A server that is down or refuses
the request is reported in one line with the URL and what to do.
"""

from __future__ import annotations

import argparse
import sys

from openai import APIConnectionError, APIStatusError, OpenAI

DEFAULT_SYSTEM = "You are a helpful voice assistant. Keep answers short."


def reasoning_of(obj) -> str:
    """Reasoning text of a message or delta under either field name vLLM/llama.cpp use."""
    extra = obj.model_extra or {}
    return extra.get("reasoning") or extra.get("reasoning_content") or ""


def ask(client: OpenAI, request: dict, stream: bool) -> None:
    """Print the answer on stdout and any reasoning on stderr, streamed or whole."""
    if not stream:
        message = client.chat.completions.create(**request).choices[0].message
        if reasoning := reasoning_of(message):
            print(f"[reasoning] {reasoning}", file=sys.stderr)
        print(message.content or "")
        return
    in_reasoning = False
    for chunk in client.chat.completions.create(stream=True, **request):
        for choice in chunk.choices:
            if text := reasoning_of(choice.delta):
                if not in_reasoning:
                    print("[reasoning] ", end="", file=sys.stderr)
                    in_reasoning = True
                print(text, end="", file=sys.stderr, flush=True)
            if choice.delta.content:
                print(choice.delta.content, end="", flush=True)
    print()
    if in_reasoning:
        print(file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("prompt")
    parser.add_argument("--url", default="http://127.0.0.1:8000/v1", help="OpenAI base URL")
    parser.add_argument("--model", default="nemotron-3-nano", help="served model name")
    parser.add_argument("--system", default=DEFAULT_SYSTEM, help="system prompt ('' for none)")
    parser.add_argument("--stream", action="store_true", help="stream tokens as they arrive")
    parser.add_argument("--reasoning", action="store_true", help="turn thinking on")
    parser.add_argument("--max-tokens", type=int, default=256)
    args = parser.parse_args(argv)

    client = OpenAI(base_url=args.url, api_key="not-needed")
    messages = [{"role": "system", "content": args.system}] if args.system else []
    messages.append({"role": "user", "content": args.prompt})
    request = dict(
        model=args.model,
        messages=messages,
        temperature=0,
        max_tokens=args.max_tokens,
        extra_body={"chat_template_kwargs": {"enable_thinking": args.reasoning}},
    )
    try:
        ask(client, request, args.stream)
    except APIConnectionError as exc:
        sys.exit(
            f"error: cannot reach {args.url} ({exc.__cause__ or exc}); start vLLM "
            "(`nemotron-speech serve-llm`, or `docker compose -f docker/compose.yaml up -d llm`) "
            "or pass --url http://HOST:PORT/v1"
        )
    except APIStatusError as exc:
        sys.exit(f"error: {args.url} answered HTTP {exc.status_code}: {exc.message}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
