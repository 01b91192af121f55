"""training.members: the networks inside an ensemble, each as a model of its own."""

import numpy as np

from training.members import members_of, single
from training.network import build_cnn_bn, ensemble


def test_members_of_an_ensemble_average_to_it_and_survive_saving(tmp_path):
    import keras

    nets = [build_cnn_bn(name=f"cnn_bn_{i}") for i in range(2)]
    for i, net in enumerate(nets):  # distinct weights, so a swapped member would show
        keras.utils.set_random_seed(i)
        net.set_weights([np.random.normal(0, 0.1, w.shape) for w in net.get_weights()])
    whole = ensemble(nets)
    whole.save(tmp_path / "whole.keras")
    loaded = keras.models.load_model(tmp_path / "whole.keras")
    x = np.random.default_rng(0).random((5, 28, 28, 1)).astype("float32")

    members = [single(m, "cnn_bn") for m in members_of(loaded)]
    assert len(members) == 2
    out = [m.predict(x, verbose=0) for m in members]
    np.testing.assert_allclose(out[0], nets[0].predict(x, verbose=0), atol=1e-6)
    np.testing.assert_allclose(out[1], nets[1].predict(x, verbose=0), atol=1e-6)
    np.testing.assert_allclose((out[0] + out[1]) / 2, whole.predict(x, verbose=0), atol=1e-6)
    assert not np.allclose(out[0], out[1])


def test_a_single_network_is_its_own_member():
    net = build_cnn_bn()
    assert members_of(net) == [net]
