"""The digit GAN's networks, evaluation and model card; the job itself is training.digit_gan."""
