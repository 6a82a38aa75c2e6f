"""The registry entries of the built-in methods (one `register` call each)."""

from __future__ import annotations

from decoding import diffusion, divergence, harp, replay, search, speculative, voting
from decoding.methods import Method, register

register(Method(
    name="diffusion",
    title="Diffusion",
    params=diffusion.DiffusionParams,
    decode=diffusion.decode,
    views="viz.diffusion_view",
    kinds=("masked_diffusion", "native_diffusion"),
    intro=diffusion.INTRO,
    look_for=diffusion.LOOK_FOR,
    about=diffusion.ABOUT,  # for people; the module docstring is for programmers
))

register(Method(
    name="voting",
    title="Voting",
    params=voting.VotingParams,
    decode=voting.decode,
    views="viz.voting_view",
    kinds=("masked_diffusion",),
    intro=voting.INTRO,
    look_for=voting.LOOK_FOR,
    about=voting.ABOUT,  # for people; the module docstring is for programmers
))

register(Method(
    name="speculative",
    title="Speculative (MTP)",
    params=speculative.SpeculativeParams,
    decode=speculative.decode,
    views="viz.speculative_view",
    kinds=("causal",),  # causal models with MTP heads; one without gets a clear error from the decoder
    intro=speculative.INTRO,
    about=speculative.__doc__ or "",
    examples=speculative.EXAMPLES,
    look_for=speculative.LOOK_FOR,
))

register(Method(
    name="search",
    title="Test-time search",
    params=search.SearchParams,
    decode=search.decode,
    views="viz.search_view",
    kinds=("causal",),
    intro=search.INTRO,
    about=search.__doc__ or "",
    examples=search.EXAMPLES,
    look_for=search.LOOK_FOR,
))

register(Method(
    name="harp",
    title="HARP",
    params=harp.HarpParams,
    decode=harp.decode,
    views="viz.harp_view",
    kinds=("causal",),
    intro=harp.INTRO,
    about=harp.__doc__ or "",
    examples=harp.EXAMPLES,
    look_for=harp.LOOK_FOR,
))

register(Method(
    name="divergence",
    title="Divergence",
    params=replay.DivergenceParams,  # voting's parameters + an optional fork
    decode=replay.decode_divergence,  # voting's decoder, then the fork
    views="viz.divergence_view",
    kinds=("masked_diffusion",),
    intro=divergence.INTRO,
    about=divergence.ABOUT,
    examples=divergence.EXAMPLES,
    look_for=divergence.LOOK_FOR,
    pair=divergence.pair,  # the Replay tab's two uploaded traces, compared in this tab's views
))
