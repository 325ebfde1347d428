"""The pose network as it trains from scratch: batch normalisation after each hidden convolution
(folded away in every saved weight file) and He-normal initialisation.

A configuration that no ImageNet weights fit trains from scratch; there normal(0, 0.01) over
17+ plain ReLU convolutions starves the signal, so hidden layers get He-normal kernels
(he_init), and the small configuration also trains with a BatchNormalization after each hidden
convolution (build_bn_training_model): measured on the synthetic set, without it the network
stays on the "all background" plateau for hundreds of steps. Every weight file is the plain
network all the same: each conv + BN pair is folded into one convolution when it is saved
(fold_batch_norm), so evaluation, ensembles and the Caffe tools never see a BN layer.
"""
import math

import keras
import numpy as np
import tensorflow as tf

from model import network

BN_SUFFIX = "_bn"
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-3


class FusedBatchNorm(keras.layers.Layer):
    """Batch normalisation with TensorFlow's fused kernel (3x faster than
    keras.layers.BatchNormalization on CPU, forward and backward, measured on a
    (10, 184, 184, 16) batch); the same variables (gamma, beta, moving_mean, moving_variance)
    and inference-mode function."""

    def __init__(self, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, **kwargs):
        # Variables stay float32 inside the call (the fused kernel wants float32 scale and
        # offset also for float16 inputs).
        super().__init__(autocast=False, **kwargs)
        self.momentum, self.epsilon = float(momentum), float(epsilon)

    def build(self, input_shape):
        c = input_shape[-1]
        self.gamma = self.add_weight(shape=(c,), initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=(c,), initializer="zeros", name="beta")
        self.moving_mean = self.add_weight(shape=(c,), initializer="zeros",
                                           name="moving_mean", trainable=False)
        self.moving_variance = self.add_weight(shape=(c,), initializer="ones",
                                               name="moving_variance", trainable=False)

    def call(self, x, training=False):
        gamma = tf.cast(self.gamma, tf.float32)
        beta = tf.cast(self.beta, tf.float32)
        if training:
            y, mean, var = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, epsilon=self.epsilon, is_training=True)
            m = self.momentum
            self.moving_mean.assign(self.moving_mean * m + mean * (1.0 - m))
            self.moving_variance.assign(self.moving_variance * m + var * (1.0 - m))
        else:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32),
                epsilon=self.epsilon, is_training=False)
        return y

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "epsilon": self.epsilon}


def conv_bn_relu(spec, x, init_seed, synchronized):
    """Conv2D `spec.name`, then (hidden layers) `<name>_bn` and `<name>_relu`."""
    h = keras.layers.Conv2D(
        spec.filters, spec.kernel, padding="same", name=spec.name,
        kernel_initializer=keras.initializers.RandomNormal(0.0, network.INIT_STD,
                                                           seed=init_seed),
        bias_initializer="zeros")(x)
    if not spec.relu:
        return h
    if synchronized:   # statistics over the global batch of all replicas
        h = keras.layers.BatchNormalization(
            momentum=BN_MOMENTUM, epsilon=BN_EPSILON, synchronized=True,
            name=spec.name + BN_SUFFIX)(h)
    else:
        h = FusedBatchNorm(name=spec.name + BN_SUFFIX)(h)
    return keras.layers.ReLU(name=spec.name + "_relu")(h)


def build_bn_training_model(config, seed=None, synchronized=False,
                            input_norm=network.DEFAULT_INPUT_NORM):
    """The training model of `config` (same inputs, outputs and layer names as
    model.network's) with a BatchNormalization (layer <conv>_bn) between every hidden
    convolution and its ReLU. The network at inference is unchanged: fold_batch_norm turns
    each conv + BN pair back into one convolution of the plain model, which is what the
    weight files hold (so the evaluation, the ensembles and the Caffe tools see the same
    network). input_norm: the input layer, "folded" or "plain" (model.network)."""
    cfg = network.get_config(config)
    image = keras.Input((cfg.input_size, cfg.input_size, 3), name="image")
    mask = keras.Input((cfg.output_size, cfg.output_size, 1), name="mask")
    t = {"image": network.input_layer(input_norm)(image)}
    for i, spec in enumerate(network.layer_plan(cfg)):
        ins = [t[n] for n in spec.inputs]
        if spec.kind == "pool":
            t[spec.name] = keras.layers.MaxPooling2D(2, 2, padding="same", name=spec.name)(ins[0])
        elif spec.kind == "concat":
            t[spec.name] = keras.layers.Concatenate(axis=-1, name=spec.name)(ins)
        else:
            init_seed = None if seed is None else seed * 1000 + i
            t[spec.name] = conv_bn_relu(spec, ins[0], init_seed, synchronized)
    outputs = [keras.layers.Multiply(name=f"stage{s}_L{b}")([t[name], mask])
               for s in range(1, cfg.num_stages + 1)
               for b, name in enumerate(network.output_layer_names(cfg, s), 1)]
    model = keras.Model({"image": image, "mask": mask}, outputs,
                        name=f"pose_{cfg.name}_training_bn")
    network.plain_from_folded_init(model)
    return model


def fold_batch_norm(bn_model, plain_model, config):
    """Copy `bn_model`'s weights into the plain network `plain_model`, each conv + BN pair
    (inference mode: moving statistics) folded into one convolution:
    W' = W s, b' = (b - mean) s + beta with s = gamma / sqrt(var + eps)."""
    for spec in network.conv_layers(config):
        kernel, bias = (np.asarray(v.numpy(), np.float64)
                        for v in bn_model.get_layer(spec.name).weights)
        if spec.relu:
            bn = bn_model.get_layer(spec.name + BN_SUFFIX)
            gamma, beta = np.asarray(bn.gamma.numpy()), np.asarray(bn.beta.numpy())
            mean = np.asarray(bn.moving_mean.numpy())
            var = np.asarray(bn.moving_variance.numpy())
            scale = gamma / np.sqrt(var + bn.epsilon)
            kernel = kernel * scale
            bias = (bias - mean) * scale + beta
        plain_model.get_layer(spec.name).set_weights([kernel.astype(np.float32),
                                                      bias.astype(np.float32)])


def he_init(model, config, seed):
    """He-normal kernels (std sqrt(2 / fan_in), seeded per layer) for every hidden convolution;
    the final 1x1 output convolutions keep their normal(0, 0.01) so that the first
    predictions are near zero. For training without ImageNet VGG19: with std 0.01 a stack of
    14+ ReLU convolutions shrinks the signal about tenfold per layer, the features and their
    gradients vanish and the network only learns the background (measured: after 250 steps
    of the small configuration every part heatmap stayed below 0.05)."""
    for i, spec in enumerate(network.conv_layers(config)):
        if not spec.relu:
            continue
        layer = model.get_layer(spec.name)
        std = math.sqrt(2.0 / (spec.kernel * spec.kernel * spec.in_channels))
        rng = np.random.default_rng([int(seed), i])
        layer.kernel.assign(rng.normal(0.0, std, tuple(layer.kernel.shape)).astype(np.float32))
