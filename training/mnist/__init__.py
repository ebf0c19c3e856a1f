"""The MNIST digit classifiers: one shared job (train.py) and one module per network (mlp.py, cnn.py).

    python -m training.mnist mlp ...      # train the multi-layer perceptron -> models/mnist_mlp
    python -m training.mnist cnn ...      # train the convolutional network  -> models/mnist_cnn
    python -m training.mnist.real_life    # both, served, on the real-life digit photos

job.py: what a network supplies (ClassifierJob) and the served contract; inputs.py: the input
scaling and the augmentation; args.py: the flags; loop.py: one epoch and the evaluation;
train.py: the job (seed, data, epochs, checkpoints); publish.py: selection, test, export, card.
"""
