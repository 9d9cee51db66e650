"""microCLIP Studio's services behind the Gradio tabs, importable without Gradio: the model registry, the
adaptation runner, the answer cache, who may read server folders, and the out-of-world flag in words."""
