"""The Ollama Modelfile: chat templates translated to Go template syntax by rendering, checked
against the real rendering; templates that cannot be translated say so; plain-prompt runs get
their prompt template."""

from __future__ import annotations

import pytest

from llmtune.runs.modelfile import Layout, chat_layout, chat_template, go_template, modelfile_text, plain_template

# SmolLM2-135M-Instruct's template, as its GGUF file carries it: ChatML with a default system prompt.
CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TRIMMING = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] | trim }}<|end|>{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")


@pytest.fixture
def tok():
    from llmtune.models.builtin import load_tiny_tokenizer

    return load_tiny_tokenizer()


def test_chatml_becomes_a_go_template_with_its_default_system_prompt(tok):
    tok.chat_template = CHATML
    layout = chat_layout(tok)
    default = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    assert layout == Layout(start=default, start_system="",
                            prefix={r: f"<|im_start|>{r}\n" for r in ("system", "user", "assistant")},
                            suffix={r: "<|im_end|>\n" for r in ("system", "user", "assistant")},
                            generation="<|im_start|>assistant\n")
    assert go_template(layout) == (
        '{{ if and .Messages (eq (index .Messages 0).Role "system") }}{{ else }}' + default + '{{ end }}'
        '{{ range .Messages }}'
        '{{ if eq .Role "system" }}<|im_start|>system\n{{ .Content }}<|im_end|>\n'
        '{{ else if eq .Role "user" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n'
        '{{ else if eq .Role "assistant" }}<|im_start|>assistant\n{{ .Content }}<|im_end|>\n'
        '{{ end }}{{ end }}<|im_start|>assistant\n')
    template = chat_template(tok)
    assert template.text == go_template(layout) and template.stops == ["</s>"]  # </s>: the tiny tokenizer's EOS


def test_the_layout_predicts_conversations_it_was_not_built_from(tok):
    """The translation is trusted only because predicting unseen conversations matches Jinja."""
    tok.chat_template = CHATML
    layout = chat_layout(tok)
    conversation = [{"role": "user", "content": "one"}, {"role": "assistant", "content": "two\nlines"},
                    {"role": "user", "content": " three "}]
    assert layout.predict(conversation, True) == tok.apply_chat_template(conversation, tokenize=False,
                                                                        add_generation_prompt=True)


def test_the_tiny_template_translates_and_stops_on_its_turn_markers(tok):
    template = chat_template(tok)
    assert template.text is not None and template.text.startswith("{{ range .Messages }}")
    assert '{{ else if eq .Role "assistant" }}<s>assistant\n{{ .Content }}</s>{{ end }}' in template.text
    assert template.stops == ["</s>", "<s>"]


def test_a_template_that_trims_content_is_not_translated(tok):
    tok.chat_template = TRIMMING
    template = chat_template(tok)
    assert template.text is None and "not translated" in template.note
    text = modelfile_text("m-f16.gguf", template, 8192, "runs/x", "f16")
    assert not any(line.startswith("TEMPLATE") for line in text.splitlines())
    assert "# No TEMPLATE line: the run's chat template does more" in text and "ollama show NAME --template" in text
    assert "PARAMETER num_ctx 4096" in text and 'PARAMETER stop "</s>"' in text


def test_no_chat_template_no_template_line(tok):
    tok.chat_template = None
    assert chat_template(tok).text is None


def test_literal_braces_are_escaped_for_go(tok):
    tok.chat_template = ("{% for m in messages %}{{ '{{' }}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}{{ '{{' }}assistant: {% endif %}")
    template = chat_template(tok)
    assert template.text is not None
    assert '{{ "{{" }}user: {{ .Content }}' in template.text and "{{{{" not in template.text


def test_a_plain_prompt_run_gets_its_prompt_template(tok):
    from llmtune.recipe.schema import DataSection

    template = plain_template(tok, DataSection.model_fields["prompt_template"].default)
    assert template.text == "### Instruction:\n{{ .Prompt }}\n\n### Response:\n"
    assert template.stops == ["</s>"]
