"""Pure rendering: arrays in, images and figures out. No Gradio here."""
