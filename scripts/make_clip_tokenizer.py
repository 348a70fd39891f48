#!/usr/bin/env python3
"""Build ``assets/clip/tokenizer.json`` (OpenAI CLIP BPE tokenizer) and
``tests/fixtures/tokenizer_cases.json``.

Not run by CI: its outputs are committed.  Needs Python with ``tokenizers``
(0.23.x was used), plus ``ftfy`` and ``regex`` for the reference check, and
``pip`` to fetch the vocabulary.  Optionally a transformers < 5 install for the
slow ``CLIPTokenizer`` check (transformers 5 removed the slow tokenizers; set
PYTHONPATH to a ``pip install --no-deps --target DIR transformers==4.57.6``).

Source of the vocabulary
------------------------
OpenAI's MIT-licensed ``bpe_simple_vocab_16e6.txt.gz``, taken from the PyPI
wheel of ``open-clip-torch`` (``pip download --no-deps open-clip-torch``; the
.gz sits at ``open_clip/bpe_simple_vocab_16e6.txt.gz`` inside the wheel/zip),
or from ``--bpe FILE`` / ``--wheel FILE``.

Construction (identical to OpenAI's ``SimpleTokenizer``)
-------------------------------------------------------
vocab ids:
  0..255       the 256 byte-level unicode chars in GPT-2 ``bytes_to_unicode`` order
               (printable '!'..'~', '¡'..'¬', '®'..'ÿ' first, then the other bytes
               mapped to U+0100.. in ascending byte order)
  256..511     the same 256 with ``</w>`` appended
  512..49405   the 48894 merges (lines 1..48894 of the file after the header line
               0, i.e. ``lines[1:48895]``), merge ``"a b"`` adds entry ``"ab"``
  49406        ``<|startoftext|>``     49407  ``<|endoftext|>``
normalizer:    NFC, Replace(``\\s+`` -> " "), Lowercase
pre-tokenizer: Split(CLIP regex, behavior=removed, invert=true) then
               ByteLevel(add_prefix_space=false, use_regex=false)
model:         BPE, end_of_word_suffix ``</w>``, no continuing-subword prefix,
               no unk token (every byte has a token, so none is needed)
decoder:       Sequence[ByteLevel, Replace("</w>" -> " "), Strip(" ", 0, 1)]
               (ByteLevel must come first: a space is not a byte-level char)
post-processor: TemplateProcessing  single: ``<|startoftext|> $A <|endoftext|>``
               pair: ``<|startoftext|> $A <|endoftext|> $B:1 <|endoftext|>:1``
"a photo of a cat" -> [49406, 320, 1125, 539, 320, 2368, 49407].

Differences from the Python reference tokenizers (documented, not bugs)
---------------------------------------------------------------------
OpenAI's ``SimpleTokenizer`` runs ``ftfy.fix_text`` and ``html.unescape`` (twice)
before whitespace-cleaning and lower-casing; transformers' slow
``CLIPTokenizer`` (< 5) runs ``ftfy.fix_text`` (whose default also unescapes
HTML entities).  The tokenizer.json here -- like transformers' fast CLIP
tokenizer -- does only NFC + whitespace collapse + lowercase, so these differ
(checked and printed as ``KNOWN_DIFFERENCES`` below):
  * HTML entities: "fish &amp; chips" -> "fish & chips" in both Python ones;
  * ftfy: curly quotes/apostrophes (’ “ ”) become ' and ", full-width chars
    (ＡＢ１) become ASCII, ligatures (ﬁ ﬀ) are split, mojibake ("cafÃ©") is
    repaired, some control characters are removed -- not here;
  * Python's ``\\s`` also matches \\x1c-\\x1f and \\x85, and its str.lower() may
    differ from Rust's for a few exotic code points: avoided in the tests.
Everything else (ASCII, accents, CJK, emoji, digits, contractions, runs of
whitespace, the special-token strings) agrees: ``verify()`` checks the 100
fixture strings plus extras against OpenAI's algorithm (re-typed below), and
against transformers' slow CLIPTokenizer when importable (transformers < 5)
or else transformers 5's CLIPTokenizer.  Run used for the committed files:
  python scripts/make_clip_tokenizer.py                          (tokenizers 0.23.3)
  PYTHONPATH=<transformers 4.57.6 + tokenizers 0.22.2 --target dir> \\
    python scripts/make_clip_tokenizer.py --verify-only          -> 0 mismatches
"""

from __future__ import annotations

import argparse
import glob
import gzip
import html
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BPE_IN_WHEEL = "open_clip/bpe_simple_vocab_16e6.txt.gz"
CLIP_PATTERN = (
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
)
SOT, EOT = "<|startoftext|>", "<|endoftext|>"
N_MERGES = 49152 - 256 - 2  # 48894


# --------------------------------------------------------------------------- #
# vocabulary
# --------------------------------------------------------------------------- #
@lru_cache()
def bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def read_bpe_lines(args) -> list[str]:
    if args.bpe:
        data = Path(args.bpe).read_bytes()
    else:
        wheel = args.wheel
        tmp = None
        if not wheel:
            tmp = tempfile.mkdtemp(prefix="openclip-")
            subprocess.check_call(
                [sys.executable, "-m", "pip", "download", "--no-deps", "open-clip-torch", "-d", tmp, "-q"]
            )
            wheel = glob.glob(os.path.join(tmp, "*.whl"))[0]
        with zipfile.ZipFile(wheel) as z:
            data = z.read(BPE_IN_WHEEL)
    return gzip.decompress(data).decode("utf-8").split("\n")


def build_vocab_merges(lines: list[str]):
    merges = [tuple(m.split()) for m in lines[1 : N_MERGES + 1]]
    assert len(merges) == N_MERGES and all(len(m) == 2 for m in merges)
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += [SOT, EOT]
    assert len(vocab) == 49408 and len(set(vocab)) == 49408
    return {t: i for i, t in enumerate(vocab)}, merges


def build_tokenizer(vocab, merges):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import BPE

    tok = Tokenizer(
        BPE(
            vocab=vocab,
            merges=merges,
            dropout=None,
            continuing_subword_prefix="",
            end_of_word_suffix="</w>",
            fuse_unk=False,
            unk_token=None,
        )
    )
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(CLIP_PATTERN), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.Sequence(
        [decoders.ByteLevel(), decoders.Replace("</w>", " "), decoders.Strip(" ", 0, 1)]
    )
    tok.add_special_tokens(
        [AddedToken(SOT, special=True, normalized=False), AddedToken(EOT, special=True, normalized=False)]
    )
    assert tok.token_to_id(SOT) == 49406 and tok.token_to_id(EOT) == 49407
    tok.post_processor = processors.TemplateProcessing(
        single=f"{SOT} $A {EOT}",
        pair=f"{SOT} $A {EOT} $B:1 {EOT}:1",
        special_tokens=[(SOT, 49406), (EOT, 49407)],
    )
    return tok


# --------------------------------------------------------------------------- #
# reference: OpenAI's SimpleTokenizer algorithm (MIT), re-typed here
# --------------------------------------------------------------------------- #
class OpenAIReference:
    def __init__(self, vocab, merges, html_unescape=True):
        import regex

        self.encoder = vocab
        self.byte_encoder = bytes_to_unicode()
        self.bpe_ranks = {m: i for i, m in enumerate(merges)}
        self.cache = {SOT: SOT, EOT: EOT}
        self.pat = regex.compile(CLIP_PATTERN, regex.IGNORECASE)
        self.html_unescape = html_unescape
        self.regex = regex

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
        if not pairs:
            return token + "</w>"
        while True:
            bigram = min(pairs, key=lambda p: self.bpe_ranks.get(p, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new_word, i = [], 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new_word.extend(word[i:])
                    break
                new_word.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
        out = " ".join(word)
        self.cache[token] = out
        return out

    def encode(self, text):
        import ftfy

        text = ftfy.fix_text(text)
        if self.html_unescape:
            text = html.unescape(html.unescape(text))
        text = text.strip()
        text = self.regex.sub(r"\s+", " ", text).strip().lower()
        ids = []
        for token in self.pat.findall(text):
            token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self.bpe(token).split(" "))
        return [49406] + ids + [49407]


# --------------------------------------------------------------------------- #
# test strings
# --------------------------------------------------------------------------- #
VERIFY_EXTRA = [
    "a photo of a cat",
    "A PHOTO OF A DOG",
    "hello world",
    "The quick brown fox jumps over the lazy dog.",
    "it's, they're, we've, I'm, you'll, he'd, can't",
    "IT'S THEY'RE WE'VE I'M YOU'LL HE'D CAN'T",
    "numbers 0 1 12 123 3.14159 1,000,000 2024-01-01",
    "punctuation!!! ??? ... --- ;;; ::: ((( ))) [[[ ]]] {{{ }}}",
    "email me at someone@example.com or visit https://example.org/a?b=c&d=e",
    "café naïve résumé jalapeño façade Ångström",
    "Zürich München Straße ÄÖÜ",
    "日本語のテキスト 中文 한국어",
    "Ελληνικά русский текст עברית العربية हिन्दी",
    "emoji 😀🐱🚀 👍🏽 ❤️ 🇫🇷",
    "   leading and trailing spaces   ",
    "multiple     spaces\tand\ttabs\nand\nnewlines\r\n",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    "<|startoftext|>special<|endoftext|>",
    "x'''s y''t 'sup 'tis o'clock rock'n'roll",
    "CamelCaseWords and snake_case_words and kebab-case-words",
    "#hashtag @mention $100 50% a+b=c a*b/c ~tilde ^caret `tick` |pipe| \\backslash",
    "a",
    "",
    "1",
    "!",
    "mixed123letters456and789digits",
    "x" * 200,
    "ab" * 60,
]

KNOWN_DIFFERENCES = [
    "fish &amp; chips",  # html.unescape (OpenAI only)
    "it’s “quoted”",  # ftfy uncurls quotes
    "ＦＵＬＬＷＩＤＴＨ １２３",  # ftfy fixes full width
    "cafÃ© mojibake",  # ftfy repairs mojibake
    "ﬁne ligature",  # ftfy splits ligatures (NFC keeps them)
    "ﬀ",  # likewise
]

# 100 strings for tests/fixtures/tokenizer_cases.json
CASES = [
    "",
    "a photo of a cat",
    "a diagram",
    "a dog",
    "A PHOTO OF A DOG",
    "Hello, World!",
    "hello world",
    "The quick brown fox jumps over the lazy dog.",
    "a picture of two cats sitting on a red couch",
    "an astronaut riding a horse on the moon",
    "it's",
    "they're here",
    "we've been",
    "I'm fine",
    "you'll see",
    "he'd go",
    "can't won't shouldn't",
    "IT'S LOUD",
    "rock'n'roll o'clock",
    "x'''s",
    "0",
    "7 cats",
    "123",
    "3.14159",
    "1,000,000",
    "2024-01-01",
    "room 101, floor 23",
    "v1.2.3-beta+build.42",
    "50% off",
    "$100 dollars",
    "!!!",
    "???",
    "...",
    "hello...world",
    "wait -- what?!",
    "(parentheses) [brackets] {braces}",
    "semi;colon:colon",
    "quote \"double\" and 'single'",
    "#hashtag @mention",
    "a+b=c",
    "a*b/c",
    "back\\slash",
    "under_score",
    "kebab-case-word",
    "CamelCaseWord",
    "snake_case_word",
    "email: someone@example.com",
    "https://example.org/path?query=1&x=y",
    "~tilde ^caret `tick` |pipe|",
    "<html><body>tag</body></html>",
    "café",
    "naïve résumé",
    "jalapeño",
    "façade",
    "Ångström",
    "Zürich",
    "Straße",
    "ÄÖÜ äöü",
    "crème brûlée",
    "São Paulo",
    "Łódź",
    "Ελληνικά",
    "русский текст",
    "עברית",
    "العربية",
    "हिन्दी",
    "日本語のテキスト",
    "中文",
    "한국어",
    "ไทย",
    "😀",
    "cat 🐱",
    "🚀 to the moon",
    "👍🏽",
    "❤️",
    "🇫🇷 flag",
    "emoji😀inside",
    "multiple     spaces",
    "   leading spaces",
    "trailing spaces   ",
    "tabs\tand\ttabs",
    "new\nline",
    "windows\r\nline",
    "  mixed \t\n whitespace  ",
    "UPPER CASE SENTENCE",
    "MiXeD CaSe",
    "supercalifragilisticexpialidocious",
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    "antidisestablishmentarianism",
    "x" * 50,
    "ab" * 30,
    "mixed123letters456",
    "<|startoftext|>",
    "<|endoftext|>",
    "<|startoftext|>hi<|endoftext|>",
    "a <|endoftext|> b",
    "a photo of a cat. a photo of a dog.",
    "red, green, and blue",
    "the 2 dogs and 3 cats",
    "Photo of a large brown bear standing in a river catching salmon in Alaska",
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bpe", help="path to bpe_simple_vocab_16e6.txt.gz")
    ap.add_argument("--wheel", help="path to an open_clip_torch wheel")
    ap.add_argument("--out", default=str(REPO / "assets/clip/tokenizer.json"))
    ap.add_argument("--cases-out", default=str(REPO / "tests/fixtures/tokenizer_cases.json"))
    ap.add_argument("--no-verify", action="store_true")
    ap.add_argument(
        "--verify-only",
        action="store_true",
        help="write nothing; check the existing --out file (e.g. under another tokenizers/transformers version)",
    )
    args = ap.parse_args()

    lines = read_bpe_lines(args)
    vocab, merges = build_vocab_merges(lines)
    if args.verify_only:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(args.out)
        cases = json.loads(Path(args.cases_out).read_text(encoding="utf-8"))
        for c in cases:
            assert tok.encode(c["text"]).ids == c["ids"], c
        print(f"{args.cases_out}: all {len(cases)} cases reproduce")
        verify(tok, vocab, merges, lines)
        return
    tok = build_tokenizer(vocab, merges)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(out), pretty=False)  # compact: ~40% smaller, same content
    print(f"wrote {out} ({out.stat().st_size} bytes)")

    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(out))  # reload: check what is actually saved
    ids = tok.encode("a photo of a cat").ids
    assert ids == [49406, 320, 1125, 539, 320, 2368, 49407], ids
    print("'a photo of a cat' ->", ids)

    assert len(CASES) == 100, len(CASES)
    cases = [{"text": t, "ids": tok.encode(t).ids} for t in CASES]
    cp = Path(args.cases_out)
    cp.parent.mkdir(parents=True, exist_ok=True)
    body = ",\n".join(json.dumps(c, ensure_ascii=False) for c in cases)  # one case per line
    cp.write_text("[\n" + body + "\n]\n", encoding="utf-8")
    print(f"wrote {cp} ({len(cases)} cases)")

    if args.no_verify:
        return
    verify(tok, vocab, merges, lines)


def verify(tok, vocab, merges, lines):
    strings = list(dict.fromkeys(CASES + VERIFY_EXTRA))
    checkers = {"openai": OpenAIReference(vocab, merges).encode}

    # transformers' slow CLIPTokenizer (transformers < 5 only)
    try:
        import transformers
        from transformers import CLIPTokenizer

        if hasattr(CLIPTokenizer, "bpe"):
            d = tempfile.mkdtemp(prefix="cliptok-")
            with open(os.path.join(d, "vocab.json"), "w", encoding="utf-8") as f:
                json.dump(vocab, f, ensure_ascii=False)
            with open(os.path.join(d, "merges.txt"), "w", encoding="utf-8") as f:
                f.write("\n".join(lines[: N_MERGES + 1]) + "\n")  # header + merges
            slow = CLIPTokenizer(os.path.join(d, "vocab.json"), os.path.join(d, "merges.txt"))
            assert slow.fix_text is not None, "install ftfy: without it the slow tokenizer uses BERT's BasicTokenizer"
            checkers[f"hf-slow-{transformers.__version__}"] = lambda t: slow(t)["input_ids"]
        else:
            print(f"transformers {transformers.__version__} has no slow CLIPTokenizer; using its tokenizers-backed one")
            fast = CLIPTokenizer(vocab=vocab, merges=merges)
            checkers[f"hf-{transformers.__version__}"] = lambda t: fast(t)["input_ids"]
    except ImportError as e:
        print("transformers slow tokenizer check skipped:", e)

    # the decoder behaves like OpenAI's decode(): every "</w>" becomes a space
    # (so word-final punctuation/digits come back space separated), then strip
    for s, want in [("a photo of a cat", "a photo of a cat"), ("Café naïve, 12 dogs!", "café naïve , 1 2 dogs !")]:
        d = tok.decode(tok.encode(s).ids, skip_special_tokens=True)
        assert d == want, (s, d)

    bad = 0
    for s in strings:
        mine = tok.encode(s).ids
        for name, fn in checkers.items():
            ref = fn(s)
            if ref != mine:
                bad += 1
                print(f"MISMATCH [{name}] {s!r}\n  tokenizer.json {mine}\n  {name:14} {ref}")
    print(f"verified {len(strings)} strings against {', '.join(checkers)}: {bad} mismatches")
    for s in KNOWN_DIFFERENCES:
        row = {"tokenizer.json": tok.encode(s).ids} | {n: fn(s) for n, fn in checkers.items()}
        print(f"known difference {s!r}: " + "; ".join(f"{k}={v}" for k, v in row.items()))
    if bad:
        sys.exit(1)


if __name__ == "__main__":
    main()
