"""The executive: decomposes a question, asks the memory model, synthesises the answer.

It sees the user's question and the memory's answers only, never document text, so it can be an
approved external endpoint without any document leaving the appliance.
"""
