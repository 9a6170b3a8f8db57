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

Conversations with tools (TOOL_CONVERSATIONS) are rendered with `tools` as
Hugging Face passes them (`[{"type": "function", "function": {...}}]`) and
past calls as `{"id", "type": "function", "function": {"name", "arguments"}}`,
`content` None. Their arguments are a dict and the content None, as Hugging
Face documents; where a template cannot take that (it concatenates the
arguments or the content as strings), the first of: the arguments' JSON text,
then an empty content, as llama.cpp and this library do.
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


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers",
        "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]},
    },
}
TOOLS = [WEATHER, ADD]


def call(call_id, name, arguments):
    """A past call; `arguments` is the JSON text (as json.dumps writes it)."""
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


ASK = user("What is the weather in Paris?")
CALLED = {"role": "assistant", "content": None, "tool_calls": [call("abcDEF123", "get_weather", '{"city": "Paris"}')]}
RESULT = {"role": "tool", "tool_call_id": "abcDEF123", "content": '{"temperature": 21}'}
TOOL_CONVERSATIONS = {
    "tools_ask": [ASK],
    "tools_system_ask": [SYSTEM, ASK],
    "tools_round_trip": [SYSTEM, ASK, CALLED, RESULT],
    "tools_round_trip_answered": [ASK, CALLED, RESULT, assistant("It is 21 degrees in Paris."), user("And in Rome?")],
    "tools_two_calls": [
        ASK,
        {"role": "assistant", "content": None, "tool_calls": [call("abcDEF123", "get_weather", '{"city": "Paris"}'), call("ghiJKL456", "add", '{"a": 2, "b": 3}')]},
        RESULT,
        {"role": "tool", "tool_call_id": "ghiJKL456", "content": "5"},
    ],
}


def passed(messages, as_dict, null_content):
    """The conversation with its calls' arguments as dicts (or left as text),
    and calling messages' content None (or empty)."""
    out = []
    for m in messages:
        if m.get("tool_calls"):
            m = dict(m)
            if as_dict:
                m["tool_calls"] = [
                    {**c, "function": {**c["function"], "arguments": json.loads(c["function"]["arguments"])}} for c in m["tool_calls"]
                ]
            if not null_content and m["content"] is None:
                m["content"] = ""
        out.append(m)
    return out


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
        tool_rendered = {}
        for conv, messages in TOOL_CONVERSATIONS.items():
            outcomes = []
            for as_dict, null_content in ((True, True), (False, True), (True, False), (False, False)):
                try:
                    text = template.render(
                        messages=passed(messages, as_dict, null_content),
                        tools=TOOLS,
                        documents=None,
                        add_generation_prompt=True,
                        bos_token=BOS,
                        eos_token=EOS,
                    )
                    outcomes.append({"output": text})
                except Exception as e:  # noqa: BLE001 - any failure is a result to compare
                    outcomes.append({"error": f"{type(e).__name__}: {e}"})
            # The first way the template renders with the calls' arguments,
            # else the first it renders at all, else Hugging Face's.
            shown = [o for o in outcomes if "output" in o and '"Paris"' in o["output"]]
            renders = [o for o in outcomes if "output" in o]
            tool_rendered[conv] = (shown or renders or outcomes)[0]
        results[name] = {"renders": rendered, "tool_renders": tool_rendered}
    reference = {
        "jinja2": jinja2.__version__,
        "now": NOW,
        "bos_token": BOS,
        "eos_token": EOS,
        "conversations": CONVERSATIONS,
        "tools": TOOLS,
        "tool_conversations": TOOL_CONVERSATIONS,
        "templates": results,
    }
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(reference, f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()
