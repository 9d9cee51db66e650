"""microCLIP Studio (placeholder until the Gradio app lands): how to train, evaluate and explain."""

USAGE = """microCLIP Studio

  python train.py --dataset toybirds --train_config toybirds
  python evaluate.py --dataset toybirds --ckpt-path checkpoints/toybirds-microclip.safetensors
  python -m microclip explain IMAGE --json explanation.json
"""

if __name__ == "__main__":
    print(USAGE)
