"""The registry entries of the built-in methods (one `register` call each)."""

from __future__ import annotations

from decoding import diffusion, voting
from decoding.methods import Method, register

register(Method(
    name="diffusion",
    title="Diffusion",
    params=diffusion.DiffusionParams,
    decode=diffusion.decode,
    views="viz.diffusion_view",
    kinds=("masked_diffusion", "native_diffusion"),
    intro=diffusion.INTRO,
    about=diffusion.__doc__ or "",
))

register(Method(
    name="voting",
    title="Voting",
    params=voting.VotingParams,
    decode=voting.decode,
    views="viz.voting_view",
    kinds=("masked_diffusion",),
    intro=voting.INTRO,
    about=voting.__doc__ or "",
))
