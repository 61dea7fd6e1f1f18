"""Z-Image Turbo's shape without its weights: its configuration (config), Qwen3's tokenizer built
offline (tokenizer) and a random-weight pipeline directory (scaffold, `zerase scaffold z-image-turbo`)."""
