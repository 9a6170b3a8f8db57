#!/usr/bin/env python3
"""Renders chat templates with jinja2 the way Hugging Face's
`apply_chat_template` does, for a fixed set of conversations, and writes the
results as JSON for src/tokenizer/template_tests.rs to compare against.

    python3 chat_template_reference.py TEMPLATES_DIR OUT.json

The environment mirrors transformers' chat-template compilation: a sandboxed
jinja2 environment with trim_blocks and lstrip_blocks on and the loop-controls
extension, a `tojson` filter that is `json.dumps` without ASCII escaping, and
the globals `raise_exception` and `strftime_now`. The render context is what
transformers passes when no tools or documents are given: `messages`,
`tools=None`, `documents=None`, `add_generation_prompt` and the special tokens.
`strftime_now` reads a fixed instant (NOW, in UTC) so that the output can be
compared at any later time.
"""

import datetime
import json
import os
import sys

import jinja2
import jinja2.ext
import jinja2.sandbox

# 2024-07-05 09:03:07 UTC: a single-digit day, to exercise zero padding.
NOW = 1720170187
BOS = "<|test_bos|>"
EOS = "<|test_eos|>"

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


CONVERSATIONS = {
    "system_user": [SYSTEM, user("Hello!")],
    "system_multi_turn": [SYSTEM, user("What is 2+2?"), assistant("2+2 is 4."), user("And 3+3?")],
    "user": [user("Hello!")],
    "multi_turn": [user("Hi"), assistant("Hello! How can I help?"), user("Tell me a joke.")],
    # Whitespace, quotes, braces, markup-like text and non-ASCII, which
    # templates trim, escape or pass through.
    "awkward_text": [
        {"role": "system", "content": "  Answer in French.\n"},
        user(' "Quoted" {braces} <b>tags</b> & \\backslash\\\n\ttab  '),
        assistant("\n Voilà : ¿qué? 日本語 🙂 \n"),
        user("</s><|im_end|> end"),
    ],
    "empty_content": [{"role": "system", "content": ""}, user("")],
    "ends_with_assistant": [user("Hi"), assistant("Hello")],
    "system_only": [{"role": "system", "content": "Only a system prompt."}],
    # Template syntax in a message is text, never evaluated.
    "template_syntax_in_text": [user("{{ 7 * 7 }} {% if true %}x{% endif %} {# comment #} {{ raise_exception('no') }}")],
    # A long conversation: its fuel use per message sets TEMPLATE_FUEL.
    "long": [SYSTEM] + [m for i in range(20) for m in (user(f"Question {i}?"), assistant(f"Answer {i}."))] + [user("Last question?")],
    # Shapes some templates refuse (both engines must refuse them).
    "assistant_first": [assistant("I start."), user("Hi")],
    "two_users": [user("One"), user("Two")],
}


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(fmt):
    return datetime.datetime.fromtimestamp(NOW, tz=datetime.timezone.utc).strftime(fmt)


def environment():
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def main():
    templates_dir, out_path = sys.argv[1], sys.argv[2]
    env = environment()
    results = {}
    for name in sorted(os.listdir(templates_dir)):
        if not name.endswith(".jinja"):
            continue
        with open(os.path.join(templates_dir, name), encoding="utf-8") as f:
            source = f.read()
        rendered = {}
        try:
            template = env.from_string(source)
        except jinja2.exceptions.TemplateError as e:
            results[name] = {"compile_error": str(e)}
            continue
        for conv, messages in CONVERSATIONS.items():
            try:
                text = template.render(
                    messages=messages,
                    tools=None,
                    documents=None,
                    add_generation_prompt=True,
                    bos_token=BOS,
                    eos_token=EOS,
                )
                rendered[conv] = {"output": text}
            except Exception as e:  # noqa: BLE001 - any failure is a result to compare
                rendered[conv] = {"error": f"{type(e).__name__}: {e}"}
        results[name] = {"renders": rendered}
    reference = {
        "jinja2": jinja2.__version__,
        "now": NOW,
        "bos_token": BOS,
        "eos_token": EOS,
        "conversations": CONVERSATIONS,
        "templates": results,
    }
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(reference, f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()
