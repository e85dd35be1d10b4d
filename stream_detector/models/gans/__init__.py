"""The GAN detectors; importing this package registers them.

One model per module: ``anogan``, ``latent_search_gan``, ``madgan``, ``beatgan``,
``tadgan``, ``reggan``. ``detector`` holds their shared base class, ``training`` the
adversarial loop, and ``frames`` the synthetic RGB+depth frames the latent-search GAN is
shown on.
"""

from stream_detector.models.gans.anogan import AnoGAN
from stream_detector.models.gans.beatgan import BeatGAN
from stream_detector.models.gans.latent_search_gan import LatentSearchGAN
from stream_detector.models.gans.madgan import MADGAN
from stream_detector.models.gans.reggan import RegGAN
from stream_detector.models.gans.tadgan import TadGAN

__all__ = ["MADGAN", "AnoGAN", "BeatGAN", "LatentSearchGAN", "RegGAN", "TadGAN"]
