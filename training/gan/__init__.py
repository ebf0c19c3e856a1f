"""The digit GAN: a conditional DCGAN whose served graph draws its noise from a seed.

    python -m training.gan ...           # train and publish models/digit_gan (train.py)
    python -m training.gan.rejudge ...   # re-measure the shipped GAN with another judge

networks.py: the generator and discriminator; evaluation.py: judging samples; card.py: the
model card.
"""
