#!/usr/bin/env python3
"""Makes the tokenizer fixtures with Hugging Face tokenizers and transformers (the references).

Run on the GPU machine:  python3 tests/reference/make_tokenizer_fixtures.py TOKENIZER_DIR OUT_DIR
TOKENIZER_DIR holds Qwen3's tokenizer.json and tokenizer_config.json (scripts/setup.sh fetches them
into models/qwen3-tokenizer). Writes OUT_DIR/encode.json and OUT_DIR/chat.json.
"""
import json
import os
import random
import sys
import unicodedata

import tokenizers
import transformers
from tokenizers import Tokenizer
from transformers import AutoTokenizer


def corpus():
    t = []
    # English prose and code
    t += [
        "Hello, world!",
        "The quick brown fox jumps over the lazy dog.",
        "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of foolishness...",
        "In 1969, Apollo 11 landed on the Moon; Neil Armstrong said: \"That's one small step for [a] man.\"",
        "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
        "#include <stdio.h>\nint main(void) {\n\tprintf(\"%d\\n\", 42);\n\treturn 0;\n}\n",
        "for (let i = 0; i < arr.length; i++) { sum += arr[i] * 2; } // accumulate",
        "SELECT name, COUNT(*) AS n FROM users WHERE age >= 18 GROUP BY name ORDER BY n DESC;",
        "fn main() { let v: Vec<u32> = (0..10).map(|x| x * x).collect(); println!(\"{:?}\", v); }",
        "<html><body><div class=\"a-b_c\">Text &amp; more</div></body></html>",
        "x = {'key': [1, 2.5, -3e-7, None, True]}  # a dict",
        "URL: https://example.com/path?query=1&other=two#frag and email: someone@example.org",
        "CamelCaseIdentifier snake_case_identifier kebab-case-identifier SCREAMING_CASE",
        "    indented with four spaces\n\tindented with a tab\n        eight spaces",
        "Mr. O'Neil's dog didn't bark; we'd've known. I'm sure you're right, they'll see.",
        "I'M SURE YOU'RE RIGHT. THEY'LL SEE. WE'D'VE KNOWN. DON'T! CAN'T? WON'T.",
        "It's, it'S, IT's, iT'S, 's 't 're 've 'm 'll 'd 'S 'T 'RE 'VE 'M 'LL 'D",
        "$ git commit -m \"fix: handle edge-case\" && git push origin main",
        "∑_{i=1}^{n} i² = n(n+1)(2n+1)/6 ≈ n³/3; ∀x ∈ ℝ, x² ≥ 0",
        "Price: $1,234.56 (€1.100,00) — 15% off! #deal @store",
    ]
    # Other scripts
    t += [
        "你好，世界！今天天气很好，我们去公园散步吧。",
        "机器学习是人工智能的一个分支，它使计算机能够从数据中学习。",
        "日本語のテキストです。ひらがな、カタカナ、漢字が混ざっています。",
        "東京は日本の首都で、人口は約1400万人です。ｶﾀｶﾅ（半角）もあります。",
        "안녕하세요, 세계! 한국어 텍스트입니다. 오늘 날씨가 좋네요.",
        "مرحبا بالعالم! هذا نص باللغة العربية مع أرقام ١٢٣٤٥.",
        "नमस्ते दुनिया! यह हिंदी में एक वाक्य है। क्षत्रिय ज्ञान",
        "Привет, мир! Это текст на русском языке. Ёлка и ёж.",
        "Ελληνικά: Γειά σου Κόσμε! Αλφαβητο με τόνους ά έ ή ί ό ύ ώ.",
        "עברית: שלום עולם! טקסט מימין לשמאל.",
        "ไทย: สวัสดีชาวโลก ภาษาไทยไม่มีช่องว่างระหว่างคำ",
        "Tiếng Việt: Xin chào thế giới! Đây là câu tiếng Việt có dấu.",
        "Mixed: English 中文 日本語 한국어 العربية हिन्दी русский in one line.",
    ]
    # Emoji: ZWJ sequences, skin tones, flags, keycaps
    t += [
        "👋 Hello 🌍!",
        "Family: 👨‍👩‍👧‍👦 and couple 👩‍❤️‍👨 and technologist 🧑🏽‍💻",
        "Skin tones: 👍🏻👍🏼👍🏽👍🏾👍🏿 ✋🏾",
        "Flags: 🇺🇸🇬🇧🇯🇵🇨🇳🇩🇪🇫🇷 🏴󠁧󠁢󠁳󠁣󠁴󠁿 🏳️‍🌈",
        "Keycaps: 1️⃣ 2️⃣ #️⃣ *️⃣ and variation selectors ☺︎ ☺️",
        "🤖🤖🤖🤖🤖🤖🤖🤖🤖🤖",
        "emoji🙂inside🙃words🫠",
    ]
    # Normalization: NFC/NFD pairs, compatibility characters
    for s in ["café", "naïve résumé", "Ångström", "한국어", "ế ộ ữ", "ﬁ ﬂ ﬃ", "①②③ ㈱ ㎏ ½ ™", "Ｆｕｌｌｗｉｄｔｈ　ｔｅｘｔ"]:
        t.append(unicodedata.normalize("NFC", s))
        t.append(unicodedata.normalize("NFD", s))
        t.append(unicodedata.normalize("NFKC", s))
    # Whitespace
    t += [
        "", " ", "  ", "\t", "\n", "\r\n", "\n\n\n", " \n ", "a  b   c    d",
        "trailing spaces   ", "   leading spaces", "tabs\t\tand\t\t\ttabs",
        "line1\r\nline2\r\n\r\nline4", "para one.\n\n\npara two.\n\n\n\n",
        "mixed \t \n \r\n \t\t  end", " " * 40 + "x", "\n" * 20 + "y",
        "non\u00a0breaking\u00a0spaces", "zero\u200bwidth\u200bspace", "zwnj\u200cand\u200dzwj",
        "ideographic\u3000space", "em\u2003space and thin\u2009space", "\u00a0\u00a0\u00a0",
        "word\u2028line separator\u2029paragraph separator", "\ufeffBOM at start",
    ]
    # Digits
    t += [
        "1234567890", "3.14159265358979323846264338327950288419716939937510",
        "00000000000000000000", "123 4567 89012 345678", "Phone: +1 (555) 123-4567",
        "Year 2024, 2025, 2026; ids 9999999999999999999999",
        "١٢٣٤٥٦٧٨٩٠ and ०१२३४५६७८९ and 一二三",
    ]
    # Special tokens inside text
    t += [
        "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n",
        "text<|endoftext|>more text",
        "<think>\nreasoning\n</think>\n\nanswer",
        "a <|im_start|> b <|im_end|> c",
        "<|im_start|><|im_end|><|endoftext|>",
        "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>",
        "not special: <|im_sta rt|> <im_start> <|IM_START|>",
        "<|vision_start|><|image_pad|><|vision_end|>",
        "<|fim_prefix|>def f():<|fim_suffix|>\n<|fim_middle|>",
    ]
    # Long words and long inputs
    t += [
        "Pneumonoultramicroscopicsilicovolcanoconiosis",
        "a" * 1000,
        "ab" * 600,
        "Donaudampfschifffahrtselektrizitätenhauptbetriebswerkbauunterbeamtengesellschaft",
        "x" * 5000 + " y",
        "supercalifragilisticexpialidocious" * 20,
        "的" * 300,
        "🙂" * 200,
        "word " * 500,
        "-" * 200 + "=" * 200,
        "!!!???...,,,;;;:::" * 10,
    ]
    # Punctuation and symbols
    t += [
        "«Quotes» „German“ ‘single’ “double” 「Japanese」 『more』",
        "Symbols: © ® ™ § ¶ † ‡ • … ‰ ′ ″ ‹ › ← → ↑ ↓ ⇒ ⇔",
        "Math: α β γ δ ε ζ η θ ∞ ∂ ∇ ∫ √ ≠ ≤ ≥ ± × ÷",
        "Box: ┌─┐│└┘ ▀▄█ ░▒▓",
        "Control-ish: \x01\x02\x7f",
        "Private use: \ue000\uf8ff and astral 𝕳𝖊𝖑𝖑𝖔 𝒽𝑒𝓁𝓁𝑜 𐍈",
        "Surrogate-range neighbours: \ud7ff \ue000 \U0010fffd",
    ]
    # Seeded random mixtures of the above pieces, to reach well over 200 texts.
    rng = random.Random(7)
    pieces = [s for s in t if s and len(s) < 200]
    while len(t) < 260:
        k = rng.randint(2, 5)
        sep = rng.choice([" ", "", "\n", "  ", "\t", ". "])
        t.append(sep.join(rng.choice(pieces) for _ in range(k)))
    return t


CONVERSATIONS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "What is 2+2?"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "Tell me a joke."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"},
     {"role": "assistant", "content": "<think>\nThe user asks about France. Paris.\n</think>\n\nParis."},
     {"role": "user", "content": "And Germany?"}],
    [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "<think>\nthinking 1\n</think>\n\nA1"},
     {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "<think>\nthinking 2\n</think>\n\nA2"}],
    [{"role": "user", "content": "多语言：你好！"}, {"role": "assistant", "content": "你好！有什么可以帮你？"},
     {"role": "user", "content": "🙂 emoji and\nnewlines\n\n"}],
    [{"role": "system", "content": "  spaced system  "}, {"role": "user", "content": "  spaced user  "}],
    [{"role": "user", "content": ""}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
    [{"role": "user", "content": "Solve it"},
     {"role": "assistant", "content": "The answer is 4.", "reasoning_content": "2+2 is 4."},
     {"role": "user", "content": "Thanks"}],
]


def main():
    tok_dir = sys.argv[1] if len(sys.argv) > 1 else "models/qwen3-tokenizer"
    out_dir = sys.argv[2] if len(sys.argv) > 2 else "tests/fixtures/tokenizer"
    os.makedirs(out_dir, exist_ok=True)
    print("tokenizers", tokenizers.__version__, "transformers", transformers.__version__)
    tk = Tokenizer.from_file(os.path.join(tok_dir, "tokenizer.json"))
    cases = []
    for text in corpus():
        ids = tk.encode(text, add_special_tokens=False).ids
        cases.append({"text": text, "ids": ids,
                      "decoded": tk.decode(ids, skip_special_tokens=False),
                      "decoded_skip_special": tk.decode(ids, skip_special_tokens=True)})
    with open(os.path.join(out_dir, "encode.json"), "w", encoding="utf-8") as f:
        json.dump({"tokenizer": "qwen3", "reference": "tokenizers %s" % tokenizers.__version__, "cases": cases},
                  f, ensure_ascii=False, indent=0)
    print("encode cases:", len(cases))

    at = AutoTokenizer.from_pretrained(tok_dir)
    chats = []
    for conv in CONVERSATIONS:
        for agp in (True, False):
            for think in (True, False):
                rendered = at.apply_chat_template(conv, tokenize=False, add_generation_prompt=agp, enable_thinking=think)
                ids = tk.encode(rendered, add_special_tokens=False).ids
                chats.append({"messages": conv, "add_generation_prompt": agp, "enable_thinking": think,
                              "rendered": rendered, "ids": ids})
    with open(os.path.join(out_dir, "chat.json"), "w", encoding="utf-8") as f:
        json.dump({"reference": "transformers %s apply_chat_template" % transformers.__version__, "cases": chats},
                  f, ensure_ascii=False, indent=0)
    print("chat cases:", len(chats))


if __name__ == "__main__":
    main()
