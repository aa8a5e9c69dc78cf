"""Export of a trained memory model to GGUF (f16 / q8_0) and the llama.cpp agreement check.

``gguf_writer`` turns a transformers Llama model into a GGUF whose metadata (tokenizer, chat
template) comes from the base model's GGUF, in anonymous memory only; ``verify`` compares its
greedy answers in llama.cpp with the transformers model's and refuses a file that disagrees;
``pipeline`` exports a version and switches what serves; ``promotion`` is the two ways a version
starts serving (promotion, rollback), each through the approval gate.
"""
