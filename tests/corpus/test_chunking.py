from appliance.config import ChunkingParams
from appliance.corpus.chunking import chunk_text


def test_short_text_is_one_chunk() -> None:
    chunks = chunk_text("One paragraph.\n\nAnother one.", ChunkingParams(target_words=50, overlap_words=10))
    assert len(chunks) == 1 and chunks[0].text == "One paragraph.\n\nAnother one."


def test_chunks_respect_size_and_overlap() -> None:
    paras = [f"Paragraph {i} states that fact number {i} is {i * 7}." for i in range(60)]
    text = "\n\n".join(paras)
    params = ChunkingParams(target_words=60, overlap_words=12)
    chunks = chunk_text(text, params)
    assert len(chunks) > 5
    assert all(c.n_words <= params.target_words for c in chunks)
    for a, b in zip(chunks, chunks[1:]):
        assert a.text.split("\n\n")[-1] == b.text.split("\n\n")[0]  # one paragraph of overlap
    # every paragraph survives whole somewhere
    joined = "\n\n".join(c.text for c in chunks)
    assert all(p in joined for p in paras)


def test_long_paragraph_is_split_on_sentences() -> None:
    text = " ".join(f"Sentence {i} has some words in it." for i in range(100))
    chunks = chunk_text(text, ChunkingParams(target_words=50, overlap_words=0))
    assert len(chunks) >= 14
    assert all(c.n_words <= 50 for c in chunks)
    assert chunks[1].text.startswith("Sentence")
