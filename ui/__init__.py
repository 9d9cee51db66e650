"""The Gradio layer: one module per tab, the model registry and the adaptation job runner."""
