"""Everything this project knows that differs between the s3prl upstream families it compresses.

One :class:`Family` object per model family (HuBERT, wav2vec 2.0, WavLM). Code elsewhere asks the family
object instead of comparing family names: how its s3prl *local* checkpoint is laid out, how to build its
model and config, whether its layers pass WavLM's relative position bias, how its front end marks padded
frames, whether it normalises waveforms, which s3prl expert runs it, and how its config and weights are
named in the ``transformers`` format. Adding a family means adding one object here.

The ``transformers`` mapping is *data* (pairs of names), so it reads in both directions: an exporter
maps ``s3prl -> transformers`` with :meth:`Family.hf_config_kwargs` and :meth:`Family.hf_weight_names`,
an importer maps back with :meth:`Family.s3prl_config_from_hf` and the same pairs reversed.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

MASK_CHUNKS = "chunks"  # HuBERT / WavLM: a frame is padding when all samples of its chunk are (forward_padding_mask)
MASK_CONV_LENGTHS = "conv_lengths"  # wav2vec 2.0: the CNN's output-length formula (_get_feat_extract_output_lengths)

# (s3prl config field, transformers config key, type) for every family; the values are copied
# (``activation_fn`` and ``extractor_mode`` are translated by :data:`HF_VALUE_MAPS`).
HF_CONFIG_KEYS: Tuple[Tuple[str, str, type], ...] = (
    ("encoder_embed_dim", "hidden_size", int), ("encoder_layers", "num_hidden_layers", int),
    ("encoder_attention_heads", "num_attention_heads", int), ("encoder_ffn_embed_dim", "intermediate_size", int),
    ("activation_fn", "hidden_act", str), ("dropout", "hidden_dropout", float),
    ("attention_dropout", "attention_dropout", float), ("activation_dropout", "activation_dropout", float),
    ("dropout_input", "feat_proj_dropout", float), ("encoder_layerdrop", "layerdrop", float),
    ("extractor_mode", "feat_extract_norm", str), ("conv_bias", "conv_bias", bool),
    ("conv_pos", "num_conv_pos_embeddings", int), ("conv_pos_groups", "num_conv_pos_embedding_groups", int),
    ("layer_norm_first", "do_stable_layer_norm", bool),
)
HF_CONFIG_DEFAULTS: Dict[str, Any] = {"dropout_input": 0.0}  # s3prl fields a family's config may lack
# s3prl value -> transformers value, per config field (invert the dicts to import)
HF_VALUE_MAPS: Dict[str, Dict[Any, Any]] = {
    "activation_fn": {"gelu": "gelu", "relu": "relu", "gelu_accurate": "gelu_new"},
    "extractor_mode": {"default": "group", "layer_norm": "layer"},
}
# constant transformers config values for every family (s3prl's fixed choices); an import refuses other values
HF_CONFIG_CONSTANTS: Dict[str, Any] = {"layer_norm_eps": 1e-5, "feat_extract_activation": "gelu"}
# transformers options that add modules s3prl's model classes lack: the value each must have to be imported
# (a config without the key has the default, which is this value)
HF_UNSUPPORTED_OPTIONS: Dict[str, Any] = {
    "add_adapter": False,  # wav2vec 2.0 / WavLM: convolutional adapter after the encoder
    "adapter_attn_dim": None,  # wav2vec 2.0 (MMS): attention adapters in every layer
    "conv_pos_batch_norm": False,  # HuBERT: batch norm instead of weight norm in the position convolution
}
# transformers architectures that are the base model plus a head, the base model's weights under
# ``<hf_model_type>.``; the head (every other weight) is skipped by an import
HF_HEAD_VARIANTS: Tuple[str, ...] = ("ForCTC", "ForSequenceClassification", "ForPreTraining",
                                     "ForAudioFrameClassification", "ForXVector")
# the position convolution's weight norm: s3prl name -> its transformers names (torch < 2.1 ``weight_norm``,
# and the ``parametrizations`` names of ``torch.nn.utils.parametrizations.weight_norm``); same ``dim=2``
HF_POS_CONV_WEIGHT_NORM: Tuple[Tuple[str, Tuple[str, str]], ...] = (
    ("encoder.pos_conv.0.weight_g", ("encoder.pos_conv_embed.conv.weight_g",
                                     "encoder.pos_conv_embed.conv.parametrizations.weight.original0")),
    ("encoder.pos_conv.0.weight_v", ("encoder.pos_conv_embed.conv.weight_v",
                                     "encoder.pos_conv_embed.conv.parametrizations.weight.original1")),
)
# s3prl weights that a transformers model may lack because only training uses them: ``masked_spec_embed``
# exists only when the config masks (``mask_time_prob`` or ``mask_feature_prob`` > 0); an import zeroes them
HF_TRAINING_ONLY: Tuple[str, ...] = ("mask_emb",)
# the projection transformers always has; s3prl has none when the CNN width equals the model width, where an
# export writes the identity (and an import accepts only the identity)
HF_FEATURE_PROJECTION = ("feature_projection.projection.weight", "feature_projection.projection.bias")

# per transformer layer, modules (their ``weight``/``bias`` map together): (s3prl, transformers)
_HF_LAYER_MODULES: Tuple[Tuple[str, str], ...] = (
    *((f"self_attn.{p}", f"attention.{p}") for p in ("q_proj", "k_proj", "v_proj", "out_proj")),
    ("self_attn_layer_norm", "layer_norm"), ("final_layer_norm", "final_layer_norm"),
    ("fc1", "feed_forward.intermediate_dense"), ("fc2", "feed_forward.output_dense"),
)


@dataclass(frozen=True)
class WeightName:
    """One s3prl weight and its ``transformers`` name; ``required``: the exporter fails when it is absent
    (optional ones, e.g. a bias switched off in the config, are mapped only when present)."""

    s3prl: str
    hf: str
    required: bool = True


@dataclass(frozen=True)
class Family:
    name: str
    weights_key: str  # where the state_dict lives in the checkpoint
    config_key: str  # where the model config (with ``encoder_layers``) lives
    required_keys: Tuple[str, ...]
    expert: str  # "module:Class" of s3prl's expert for the local format
    local_entry: str  # s3prl hub entry that loads this local format
    default_entry: str  # s3prl hub entry whose weights a pruned entry uses when given no checkpoint
    default_url: str  # the URL that s3prl's default entry downloads (same code path: s3prl's downloader)
    config_class: str  # "module:Class" of s3prl's model config
    model_class: str  # "module:Class" of s3prl's model
    hf_config_class: str  # ``transformers`` config class name
    hf_model_class: str  # ``transformers`` model class name
    hf_model_type: str  # ``model_type`` in a ``transformers`` config.json; also the prefix of the base model's
    # weights in the head variants (``hubert.``, ``wav2vec2.``, ``wavlm.``)
    # WavLM: each layer takes and returns the relative position bias (``pos_bias``), computed by the first
    # layer that owns a bias table; the others' layers return ``(x, (attn, layer_result))``
    position_bias: bool = False
    frame_mask: str = MASK_CHUNKS  # how the front end marks padded frames (see the MASK_* constants)
    task_config_class: str = ""  # "module:Class" of the task config that says whether waveforms are normalised
    # weights (per-layer names) that only the first layer owns and every later layer uses; when that layer
    # is removed they move to the new first layer (WavLM's relative position bias table)
    first_layer_weights: Tuple[str, ...] = ()
    # extra (s3prl config field, transformers config key, type) triples of this family
    hf_extra_config_keys: Tuple[Tuple[str, str, type], ...] = ()
    hf_extra_config_constants: Mapping[str, Any] = field(default_factory=dict)
    # s3prl config fields that transformers does not keep but s3prl's config class requires (import only)
    hf_import_defaults: Mapping[str, Any] = field(default_factory=dict)
    # task config fields an import fills (besides ``sample_rate`` and ``normalize``)
    hf_import_task_defaults: Mapping[str, Any] = field(default_factory=dict)
    # extra per-layer weights: (s3prl module or tensor name, transformers name, is a module with weight/bias)
    hf_extra_layer_weights: Tuple[Tuple[str, str, bool], ...] = ()

    # ------------------------------------------------------------ checkpoint layout
    def expert_class(self):
        return _import(self.expert)

    def num_layers(self, ckpt: Mapping[str, Any]) -> int:
        cfg = ckpt[self.config_key]
        if "encoder_layers" in cfg:
            return int(cfg["encoder_layers"])
        return 12  # s3prl's config default for all three families

    def weights(self, ckpt: Mapping[str, Any]) -> Dict[str, Any]:
        return ckpt[self.weights_key]

    def min_samples(self, ckpt: Mapping[str, Any]) -> int:
        """The shortest waveform (16 kHz samples) that gives one frame: the receptive field of the CNN front end."""
        return receptive_field(conv_layers(self.checkpoint_config(ckpt)))

    def matches(self, ckpt: Mapping[str, Any]) -> bool:
        return all(k in ckpt for k in self.required_keys)

    # ------------------------------------------------------------ configs and models
    def model_config(self, config: Mapping[str, Any]):
        """s3prl's config object for the plain-dict model config ``config``, every default filled in."""
        from s3prl.upstream.utils import merge_with_parent

        return merge_with_parent(_import(self.config_class), dict(config))

    def checkpoint_config(self, ckpt: Mapping[str, Any]):
        """The config object of a local-format checkpoint."""
        return self.model_config(ckpt[self.config_key])

    def task_config(self, ckpt: Mapping[str, Any]):
        """s3prl's task config object of ``ckpt`` (HuBERT / wav2vec 2.0)."""
        from s3prl.upstream.utils import merge_with_parent

        return merge_with_parent(_import(self.task_config_class), dict(ckpt["task_cfg"]))

    def normalizes_waveform(self, ckpt: Mapping[str, Any]) -> bool:
        """Whether the expert layer-normalises each waveform first (HuBERT / wav2vec 2.0: the task config)."""
        return bool(self.task_config(ckpt).normalize)

    def build_model(self, ckpt: Mapping[str, Any], num_layers: Optional[int] = None):
        """s3prl's model for ``ckpt``'s configs (random weights, full-size layers); ``num_layers`` overrides
        the depth. ``ckpt`` needs the config entries only (``config_key``, and ``task_cfg`` where used)."""
        from .errors import UserInputError

        config = dict(ckpt[self.config_key])
        if num_layers is not None:
            config["encoder_layers"] = num_layers
        cfg = self.model_config(config)
        if getattr(cfg, "layer_type", "transformer") != "transformer":
            raise UserInputError(f"{self.name} layer_type {cfg.layer_type!r} is not supported; only 'transformer' layers")
        return self._new_model(cfg, ckpt)

    def _new_model(self, cfg, ckpt: Mapping[str, Any]):
        return _import(self.model_class)(cfg)

    def trained_model(self, ckpt: Mapping[str, Any]):
        """s3prl's model with ``ckpt``'s weights in fp32 (a shipped fp16 checkpoint is widened) and LayerDrop
        off, for code that trains or runs the model itself rather than through s3prl's expert."""
        model = self.build_model(ckpt)
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in self.weights(ckpt).items()})
        model.encoder.layerdrop = 0.0
        return model.float()

    def front_end_model(self, ckpt: Mapping[str, Any]):
        """``(model, normalize_waveform)``: a 0-layer model whose modules before the transformer stack are
        the front end (see ``distill/front_end.py``)."""
        return self.build_model(ckpt, num_layers=0), self.normalizes_waveform(ckpt)

    def check_standard_model(self, ckpt: Mapping[str, Any]) -> None:
        """Raise :class:`UserInputError` unless ``ckpt``'s model has transformer layers and the plain front end
        (CNN, layer norm, projection) that code running the model outside s3prl's expert reproduces
        (distillation's front end, layer-consistency fine-tuning): not wav2vec 2.0's conformer / quantised input."""
        from .errors import UserInputError

        cfg = self.checkpoint_config(ckpt)
        layer_type, quantized = getattr(cfg, "layer_type", "transformer"), bool(getattr(cfg, "quantize_input", False))
        if layer_type != "transformer" or quantized:
            raise UserInputError(f"{self.name} variants with layer_type={layer_type!r} / quantize_input={quantized} "
                                 f"have other layers or another front end; only the standard transformer {self.name} "
                                 "is supported here")

    def run_layer(self, layer, x, padding_mask=None, pos_bias=None):
        """One transformer layer as the family's encoder runs it: ``(x, pos_bias)`` after the layer."""
        if self.position_bias:
            x, _, pos_bias = layer(x, self_attn_padding_mask=padding_mask, need_weights=False, pos_bias=pos_bias)
        else:
            x, _ = layer(x, self_attn_padding_mask=padding_mask, need_weights=False)
        return x, pos_bias

    def trims_hidden_states(self) -> bool:
        """Whether s3prl's expert cuts every hidden state to the shortest (its ``hook_postprocess``)."""
        return not self.position_bias

    # ------------------------------------------------------------ transformers format
    def hf_config_keys(self) -> Tuple[Tuple[str, str, type], ...]:
        """Every (s3prl config field, transformers config key, type) whose value is copied (see HF_VALUE_MAPS)."""
        return HF_CONFIG_KEYS + self.hf_extra_config_keys

    def hf_config_constants(self) -> Dict[str, Any]:
        return {**HF_CONFIG_CONSTANTS, **self.hf_extra_config_constants}

    def check_hf_exportable(self, cfg) -> None:
        """Raise :class:`UserInputError` when ``cfg`` has no exact ``transformers`` equivalent."""
        from .errors import UserInputError

        if getattr(cfg, "layer_type", "transformer") != "transformer":
            raise UserInputError(f"layer_type {cfg.layer_type!r} has no transformers equivalent here")
        if int(getattr(cfg, "pos_conv_depth", 1)) != 1:
            raise UserInputError("position convolutions of depth > 1 (data2vec 2.0 style) have no transformers equivalent")
        if cfg.activation_fn not in HF_VALUE_MAPS["activation_fn"]:
            raise UserInputError(f"activation {cfg.activation_fn!r} is not exportable")

    def hf_config_kwargs(self, cfg) -> Dict[str, Any]:
        """The ``transformers`` config keyword arguments for s3prl's config object ``cfg`` (convolution
        lists from ``conv_feature_layers``)."""
        kwargs = {}
        for src, hf, kind in self.hf_config_keys():
            value = kind(getattr(cfg, src, HF_CONFIG_DEFAULTS.get(src)))
            kwargs[hf] = HF_VALUE_MAPS.get(src, {}).get(value, value)
        kwargs["feat_extract_norm"] = "group" if str(cfg.extractor_mode) == "default" else "layer"
        conv = conv_layers(cfg)
        kwargs.update(conv_dim=[c[0] for c in conv], conv_kernel=[c[1] for c in conv], conv_stride=[c[2] for c in conv],
                      architectures=[self.hf_model_class], **self.hf_config_constants())
        return kwargs

    def hf_architectures(self) -> Tuple[str, ...]:
        """The ``transformers`` architectures an import reads: the base model, then its head variants."""
        stem = self.hf_model_class[: -len("Model")]
        return (self.hf_model_class, *(stem + v for v in HF_HEAD_VARIANTS))

    def check_hf_importable(self, hf_config: Mapping[str, Any]) -> None:
        """Raise :class:`UserInputError` naming the first ``transformers`` config value (of ``config.to_dict()``)
        that s3prl's model class cannot represent."""
        from .errors import UserInputError

        def refuse(key, why):
            raise UserInputError(f"config.json has {key}={hf_config.get(key)!r}: {why}; this model cannot be imported exactly")

        for src, hf, _ in self.hf_config_keys():
            values = HF_VALUE_MAPS.get(src, {})
            if values and hf_config.get(hf) not in values.values():
                refuse(hf, f"s3prl's {self.name} supports {sorted(values.values())}")
        for key, value in self.hf_config_constants().items():
            if hf_config.get(key, value) != value and not _same_number(hf_config.get(key), value):
                refuse(key, f"s3prl's {self.name} always uses {value!r}")
        for key, value in HF_UNSUPPORTED_OPTIONS.items():
            if hf_config.get(key, value) != value:
                refuse(key, f"s3prl's {self.name} has no such module (it needs {value!r})")
        sizes = {len(hf_config[k]) for k in ("conv_dim", "conv_kernel", "conv_stride")}
        if len(sizes) != 1:
            refuse("conv_dim", "conv_dim, conv_kernel and conv_stride have different lengths")

    def local_checkpoint(self, model_config: Mapping[str, Any], weights: Dict[str, Any], normalize: bool) -> Dict[str, Any]:
        """A checkpoint in this family's s3prl local format; ``normalize``: the expert layer-normalises waveforms."""
        ckpt = {self.config_key: dict(model_config), self.weights_key: weights}
        ckpt["task_cfg"] = {**self.hf_import_task_defaults, "sample_rate": 16000, "normalize": bool(normalize)}
        return ckpt

    def s3prl_config_from_hf(self, hf_config: Mapping[str, Any]) -> Dict[str, Any]:
        """The inverse of :meth:`hf_config_kwargs`: s3prl's plain-dict model config for a ``transformers``
        config dict (``config.to_dict()``)."""
        out = dict(self.hf_import_defaults)
        for src, hf, _ in self.hf_config_keys():
            inverse = {v: k for k, v in HF_VALUE_MAPS.get(src, {}).items()}
            out[src] = inverse.get(hf_config[hf], hf_config[hf])
        layers = zip(hf_config["conv_dim"], hf_config["conv_kernel"], hf_config["conv_stride"])
        out["conv_feature_layers"] = repr([tuple(int(v) for v in c) for c in layers])
        return out

    def hf_weight_names(self, cfg, s3prl_names: Sequence[str] = ()) -> List[WeightName]:
        """Every s3prl weight with its ``transformers`` name, for a model of config ``cfg``.

        Not included (conventions the exporter handles): the weight-norm parameters of the position
        convolution (``encoder.pos_conv.0.weight_g/_v``, whose ``transformers`` names depend on the torch
        version) and the identity projection ``transformers`` needs when s3prl has no ``post_extract_proj``.
        ``s3prl_names``: the checkpoint's names, to map ``post_extract_proj`` only where it exists."""
        names: List[WeightName] = []
        for i in range(len(conv_layers(cfg))):
            src, dst = f"feature_extractor.conv_layers.{i}", f"feature_extractor.conv_layers.{i}"
            names.append(WeightName(f"{src}.0.weight", f"{dst}.conv.weight"))
            if cfg.conv_bias:
                names.append(WeightName(f"{src}.0.bias", f"{dst}.conv.bias"))
            norm = {"default": f"{src}.2" if i == 0 else None, "layer_norm": f"{src}.2.1"}[str(cfg.extractor_mode)]
            if norm is not None:
                names += [WeightName(f"{norm}.{p}", f"{dst}.layer_norm.{p}") for p in ("weight", "bias")]
        for p in ("weight", "bias"):
            names.append(WeightName(f"layer_norm.{p}", f"feature_projection.layer_norm.{p}"))
            names.append(WeightName(f"encoder.layer_norm.{p}", f"encoder.layer_norm.{p}"))
            if f"post_extract_proj.{p}" in s3prl_names:
                names.append(WeightName(f"post_extract_proj.{p}", f"feature_projection.projection.{p}"))
        names += [WeightName("encoder.pos_conv.0.bias", "encoder.pos_conv_embed.conv.bias"),
                  WeightName("mask_emb", "masked_spec_embed")]
        for i in range(int(cfg.encoder_layers)):
            names += self.hf_layer_weight_names(i)
        return names

    def hf_layer_weight_names(self, i: int) -> List[WeightName]:
        src, dst = f"encoder.layers.{i}", f"encoder.layers.{i}"
        modules = _HF_LAYER_MODULES + tuple((s, h) for s, h, is_module in self.hf_extra_layer_weights if is_module)
        names = [WeightName(f"{src}.{s}.{p}", f"{dst}.{h}.{p}", required=False) for s, h in modules for p in ("weight", "bias")]
        names += [WeightName(f"{src}.{s}", f"{dst}.{h}") for s, h, is_module in self.hf_extra_layer_weights if not is_module]
        return names


class HubertFamily(Family):
    # the label dictionaries only size the pre-training head; a config-only ``ckpt`` (and an import) gets a
    # one-label one
    NO_LABELS = (("0",),)

    def _new_model(self, cfg, ckpt):
        labels = ckpt.get("dictionaries_symbols", [list(d) for d in self.NO_LABELS])
        return _import(self.model_class)(cfg, self.task_config(ckpt), labels)

    def local_checkpoint(self, model_config, weights, normalize):
        labels = [list(d) for d in self.NO_LABELS]
        return {**super().local_checkpoint(model_config, weights, normalize), "dictionaries_symbols": labels}


class Wav2Vec2Family(Family):
    def front_end_model(self, ckpt):
        self.check_standard_model(ckpt)
        return super().front_end_model(ckpt)


class WavLMFamily(Family):
    def model_config(self, config):
        return _import(self.config_class)(dict(config))  # WavLMConfig fills its own defaults

    def normalizes_waveform(self, ckpt):
        return bool(self.checkpoint_config(ckpt).normalize)

    def local_checkpoint(self, model_config, weights, normalize):
        return {self.config_key: {**model_config, "normalize": bool(normalize)}, self.weights_key: weights}

    def check_hf_exportable(self, cfg):
        from .errors import UserInputError

        super().check_hf_exportable(cfg)
        if not (getattr(cfg, "relative_position_embedding", False) and getattr(cfg, "gru_rel_pos", False)):
            raise UserInputError("transformers' WavLM always uses gated relative position bias; this WavLM config has "
                                 "relative_position_embedding/gru_rel_pos off, so it cannot be exported exactly")


def _import(spec: str):
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def _same_number(a, b) -> bool:
    return isinstance(a, (int, float)) and isinstance(b, (int, float)) and abs(a - b) <= 1e-12 * max(abs(a), abs(b))


def conv_layers(cfg) -> List[Tuple[int, int, int]]:
    """``(channels, kernel, stride)`` of every CNN layer, from the config's ``conv_feature_layers`` string."""
    return [tuple(c) for c in eval(cfg.conv_feature_layers)]  # noqa: S307 - the same string s3prl evaluates


def receptive_field(conv: Sequence[Tuple[int, int, int]]) -> int:
    """Input samples that one output frame of the conv stack ``[(channels, kernel, stride), ...]`` sees: the
    shortest input giving one frame (400 for the 320x front ends: any shorter clip makes conv1d fail)."""
    field, jump = 1, 1
    for _, kernel, stride in conv:
        field += (int(kernel) - 1) * jump
        jump *= int(stride)
    return field


def module_min_samples(module) -> int:
    """The receptive field of a *loaded* upstream's CNN front end (s3prl's ``ConvFeatureExtractionModel``:
    a ``conv_layers`` list whose entries start with a ``Conv1d``), for any hub entry built on one (the
    families' experts, distiller, pruned / distilled entries); 0 when the module has no such front end."""
    import torch

    for name, child in module.named_modules():
        if name.split(".")[-1] == "conv_layers" and isinstance(child, torch.nn.ModuleList):
            convs = [next((m for m in layer.modules() if isinstance(m, torch.nn.Conv1d)), None) for layer in child]
            if convs and all(c is not None for c in convs):
                return receptive_field([(c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs])
    return 0


FAMILIES: Dict[str, Family] = {
    "hubert": HubertFamily(
        name="hubert",
        weights_key="model_weight",
        config_key="model_cfg",
        required_keys=("task_cfg", "model_cfg", "model_weight", "dictionaries_symbols"),
        expert="s3prl.upstream.hubert.expert:UpstreamExpert",
        local_entry="hubert_local",
        default_entry="hubert",
        # s3prl/upstream/hubert/hubconf.py: hubert() -> hubert_base()
        default_url="https://huggingface.co/s3prl/converted_ckpts/resolve/main/hubert_base_ls960.pt",
        config_class="s3prl.upstream.hubert.hubert_model:HubertConfig",
        model_class="s3prl.upstream.hubert.hubert_model:HubertModel",
        hf_config_class="HubertConfig",
        hf_model_class="HubertModel",
        hf_model_type="hubert",
        task_config_class="s3prl.upstream.hubert.hubert_model:HubertPretrainingConfig",
        hf_extra_config_constants={"feat_proj_layer_norm": True},
        hf_import_defaults={"label_rate": 50},  # HuBERT's pre-training label rate (Hz); not used at inference
        hf_import_task_defaults={"label_rate": 50},
    ),
    "wav2vec2": Wav2Vec2Family(
        name="wav2vec2",
        weights_key="model_weight",
        config_key="model_cfg",
        required_keys=("task_cfg", "model_cfg", "model_weight"),
        expert="s3prl.upstream.wav2vec2.expert:UpstreamExpert",
        local_entry="wav2vec2_local",
        default_entry="wav2vec2",
        # s3prl/upstream/wav2vec2/hubconf.py: wav2vec2() -> wav2vec2_base_960()
        default_url="https://huggingface.co/s3prl/converted_ckpts/resolve/main/wav2vec_small.pt",
        config_class="s3prl.upstream.wav2vec2.wav2vec2_model:Wav2Vec2Config",
        model_class="s3prl.upstream.wav2vec2.wav2vec2_model:Wav2Vec2Model",
        hf_config_class="Wav2Vec2Config",
        hf_model_class="Wav2Vec2Model",
        hf_model_type="wav2vec2",
        task_config_class="s3prl.upstream.wav2vec2.wav2vec2_model:AudioPretrainingConfig",
        frame_mask=MASK_CONV_LENGTHS,
    ),
    "wavlm": WavLMFamily(
        name="wavlm",
        weights_key="model",
        config_key="cfg",
        required_keys=("cfg", "model"),
        expert="s3prl.upstream.wavlm.expert:UpstreamExpert",
        local_entry="wavlm_local",
        default_entry="wavlm",
        # s3prl/upstream/wavlm/hubconf.py: wavlm() -> wavlm_base_plus()
        default_url="https://huggingface.co/s3prl/converted_ckpts/resolve/main/wavlm_base_plus.pt",
        config_class="s3prl.upstream.wavlm.WavLM:WavLMConfig",
        model_class="s3prl.upstream.wavlm.WavLM:WavLM",
        hf_config_class="WavLMConfig",
        hf_model_class="WavLMModel",
        hf_model_type="wavlm",
        # transformers' WavLM always has gated relative position bias (see check_hf_exportable)
        hf_import_defaults={"relative_position_embedding": True, "gru_rel_pos": True},
        position_bias=True,
        first_layer_weights=("self_attn.relative_attention_bias.weight",),
        hf_extra_config_keys=(("num_buckets", "num_buckets", int), ("max_distance", "max_bucket_distance", int)),
        hf_extra_layer_weights=(("self_attn.grep_linear", "attention.gru_rel_pos_linear", True),
                                ("self_attn.relative_attention_bias", "attention.rel_attn_embed", True),
                                ("self_attn.grep_a", "attention.gru_rel_pos_const", False)),
    ),
}

# s3prl upstream names that load a family's local format, for `--upstream NAME` on the CLI
UPSTREAM_NAMES: Dict[str, str] = {
    **{f.local_entry: f.name for f in FAMILIES.values()},
    **{f.name: f.name for f in FAMILIES.values()},
    "hubert_custom": "hubert",
    "wav2vec2_custom": "wav2vec2",
    "hubert_base": "hubert",
    "wav2vec2_base_960": "wav2vec2",
    "wavlm_base_plus": "wavlm",
    "tiny_hubert": "hubert",  # the embedded default model: a hubert_local checkpoint shipped with the package
}


# s3prl's hub naming: ``<name>_local`` / ``_url`` / ``_custom`` entries take the checkpoint as their argument
_CHECKPOINT_ENTRY_SUFFIXES = ("_local", "_url", "_custom")


def entry_needs_checkpoint(entry: str) -> bool:
    """Whether the s3prl hub entry ``entry`` fails without a checkpoint (``-k``): the families' local entries
    and every entry that, by s3prl's naming, loads a given file."""
    return entry in {f.local_entry for f in FAMILIES.values()} or entry.endswith(_CHECKPOINT_ENTRY_SUFFIXES)


def embedded_checkpoint(name: str) -> Optional[str]:
    """The shipped checkpoint of an embedded upstream (``tiny_hubert``); None for every other name."""
    if name == "tiny_hubert":
        from .upstreams.tiny.expert import resolve_ckpt

        return resolve_ckpt(None)
    return None


def detect_family(ckpt: Mapping[str, Any]) -> Optional[str]:
    """The family whose local checkpoint layout ``ckpt`` has, or None."""
    if not isinstance(ckpt, Mapping):
        return None
    # HuBERT's keys include wav2vec 2.0's: the first family (in FAMILIES' order) whose keys are all there wins
    return next((f.name for f in FAMILIES.values() if f.matches(ckpt)), None)


def family_for_hf_config(config: Mapping[str, Any], source) -> Family:
    """The family of a ``transformers`` config.json (``model_type``, checked against ``architectures``);
    :class:`UserInputError` for any other model, naming it."""
    from .errors import UserInputError

    model_type = config.get("model_type") if isinstance(config, Mapping) else None
    architectures = list(config.get("architectures") or []) if isinstance(config, Mapping) else []
    family = next((f for f in FAMILIES.values() if f.hf_model_type == model_type  # or, without model_type, the class
                   or (model_type is None and architectures and architectures[0] in f.hf_architectures())), None)
    supported = ", ".join(f.hf_model_class for f in FAMILIES.values())
    if family is None:
        what = f"model_type {model_type!r}" + (f" ({', '.join(map(str, architectures))})" if architectures else "")
        raise UserInputError(f"{source} describes a {what} model; only {supported} (and their ForCTC / "
                             "ForSequenceClassification variants) can be read", argument="ckpt")
    other = [a for a in architectures if a not in family.hf_architectures()]
    if other:
        raise UserInputError(f"{source} is a {', '.join(other)}; of {family.hf_model_type} models only "
                             f"{', '.join(family.hf_architectures())} can be read", argument="ckpt")
    return family


def family_of_model(model) -> Family:
    """The family whose s3prl model class (``HubertModel``, ``Wav2Vec2Model``, ``WavLM``) ``model`` is."""
    family = next((f for f in FAMILIES.values() if isinstance(model, _import(f.model_class))), None)
    if family is None:
        raise TypeError(f"{type(model).__name__} is not the model class of any of {', '.join(FAMILIES)}")
    return family


def family_for_upstream(name: str) -> Family:
    from .errors import UserInputError

    if name not in UPSTREAM_NAMES:
        raise UserInputError(
            f"upstream {name!r} is not a family this project can prune; use one of: {', '.join(sorted(UPSTREAM_NAMES))}"
        )
    return FAMILIES[UPSTREAM_NAMES[name]]
