"""Named input templates for (query, document) pairs, shared by training and inference.

The query is never truncated; the document is cut to fit ``max_length`` tokens.
"""
from __future__ import annotations

DOCUMENT_QUERY = "document-query"  # RankMamba, causal models: "Document: {doc}\n\nQuery: {query}" + EOS
QUERY_DOCUMENT = "query-document"  # encoders: [CLS] query [SEP] document [SEP]
TEMPLATES = (DOCUMENT_QUERY, QUERY_DOCUMENT)


def render(template: str, query: str, doc: str) -> str:
    """The untruncated text a template gives (without special tokens)."""
    if template == DOCUMENT_QUERY:
        return f"Document: {doc}\n\nQuery: {query}"
    if template == QUERY_DOCUMENT:
        return f"{query} [SEP] {doc}"
    raise ValueError(f"unknown template {template!r}; choose one of {', '.join(TEMPLATES)}")


def _query_too_long(query: str, n_tokens: int, max_length: int) -> ValueError:
    return ValueError(f"query {query[:60]!r} takes {n_tokens} tokens with the template, which leaves no room for "
                      f"the document within max length {max_length}")


def encode_pairs(tokenizer, template: str, queries: list[str], docs: list[str],
                 max_length: int) -> list[dict[str, list[int]]]:
    """Token ids (and token type ids, for the encoder template) of each (query, document) pair."""
    if template == DOCUMENT_QUERY:
        return _encode_document_query(tokenizer, queries, docs, max_length)
    if template == QUERY_DOCUMENT:
        return _encode_query_document(tokenizer, queries, docs, max_length)
    raise ValueError(f"unknown template {template!r}; choose one of {', '.join(TEMPLATES)}")


def _encode_document_query(tokenizer, queries, docs, max_length):
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError(f"the {DOCUMENT_QUERY} template needs a tokenizer with an EOS token")
    ids = lambda texts: tokenizer(texts, add_special_tokens=False)["input_ids"]  # noqa: E731
    prefix = ids("Document:")
    # Tokenized in pieces that concatenate to the tokenization of the whole string.
    doc_ids = ids([" " + d for d in docs])
    tail_ids = ids([f"\n\nQuery: {q}" for q in queries])
    features = []
    for query, doc, tail in zip(queries, doc_ids, tail_ids):
        budget = max_length - len(prefix) - len(tail) - 1
        if budget < 1:
            raise _query_too_long(query, len(prefix) + len(tail) + 1, max_length)
        features.append({"input_ids": prefix + doc[:budget] + tail + [eos]})
    return features


def _encode_query_document(tokenizer, queries, docs, max_length):
    n_special = tokenizer.num_special_tokens_to_add(pair=True)
    for query, q_ids in zip(queries, tokenizer(queries, add_special_tokens=False)["input_ids"]):
        if len(q_ids) + n_special >= max_length:
            raise _query_too_long(query, len(q_ids) + n_special, max_length)
    enc = tokenizer(queries, docs, truncation="only_second", max_length=max_length)
    keys = [k for k in ("input_ids", "token_type_ids") if k in enc]
    return [{k: enc[k][i] for k in keys} for i in range(len(queries))]


def encode_texts(tokenizer, texts: list[str], max_length: int, causal: bool) -> list[dict[str, list[int]]]:
    """Token ids of single texts for a bi-encoder: the tokenizer's own special tokens for encoders
    (``[CLS] text [SEP]``), the text + EOS for causal models (so the last token has read everything)."""
    if not causal:
        enc = tokenizer(texts, truncation=True, max_length=max_length)
        return [{"input_ids": ids} for ids in enc["input_ids"]]
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("a causal bi-encoder needs a tokenizer with an EOS token")
    enc = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=max_length - 1)
    return [{"input_ids": ids + [eos]} for ids in enc["input_ids"]]
