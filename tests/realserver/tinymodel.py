"""A tiny llama-architecture GGUF model, written at test time: no download, no GPU.

Random weights emit random tokens, so the output head is biased to make the replies look like
words and end by themselves. One embedding dimension (``BIAS_DIM``) holds the same constant for
every token and no layer writes into it; after the final RMSNorm it is a near-constant input, and
its column of the output head acts as a per-token bias:

* byte tokens, ``<unk>``, ``<s>``, ``</s>`` and ``<|im_start|>`` far down (never invalid UTF-8,
  never a control token in the text),
* single characters and word prefixes somewhat down (JSON punctuation less so, for tool calls
  constrained by a grammar),
* whole words (``▁came`` → ``" came"``) at zero,
* ``<|im_end|>`` (the end-of-generation token) slightly up: a reply ends by itself after a few
  dozen tokens (``finish_reason: "stop"``), or at ``max_tokens`` (``"length"``).

A variant (``tool_calls=True``) has a chat template that llama-server recognises as a tool-call
format (:data:`TOOL_CHAT_TEMPLATE`), so that with ``tool_choice: "required"`` real tool calls come
out, their arguments constrained by the tool's JSON schema; its plain-text turn headers also let
llama-server constrain an answer to a ``json_schema`` (it cannot with the plain model's ChatML).

The file depends only on the seed (and the variant): the same seed writes the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

__all__ = ["EOS_TOKEN", "TOOL_CHAT_TEMPLATE", "TinyModel", "write_tiny_model"]

N_EMBD = 64
N_HEAD = 4
N_FF = 128
N_LAYER = 2
N_CTX = 512
BIAS_DIM = 0

EOS_TOKEN = "<|im_end|>"
_SPECIALS = [("<unk>", gguf.TokenType.UNKNOWN), ("<s>", gguf.TokenType.CONTROL),
             ("</s>", gguf.TokenType.CONTROL), ("<|im_start|>", gguf.TokenType.CONTROL),
             (EOS_TOKEN, gguf.TokenType.CONTROL)]  # fmt: skip

#: The whole words of the vocabulary (common English words).
_WORD_TEXT = """
the of and to in is it you that he was for on are with as his they be at one have this from
or had by hot word but what some we can out other were all there when up use your how said an
each she which do their time if will way about many then them write would like so these her
long make thing see him two has look more day could go come did number sound no most people my
over know water than call first who may down side been now find any new work part take get
place made live where after back little only round man year came show every good me give our
under name very through just form sentence great think say help low line differ turn cause
much mean before move right boy old too same tell does set three want air well also play small
end put home read hand port large spell add even land here must big high such follow act why
ask men change went light kind off need house picture try us again animal point mother world
near build self earth father head stand own page should country found answer school grow study
still learn plant cover food sun four between state keep eye never last let thought city tree
cross farm hard start might story saw far sea draw left late run while press close night real
life few north open seem together next white children begin got walk example ease paper group
always music those both mark often letter until mile river car feet care second book carry took
science eat room friend began idea fish mountain stop once base hear horse cut sure watch color
face wood main enough plain girl usual young ready above ever red list though feel talk bird
soon body dog family direct pose leave song measure door product black short numeral class wind
question happen complete ship area half rock order fire south problem piece told knew pass since
top whole king space heard best hour better true during hundred five remember step early hold
west ground interest reach fast verb sing listen six table travel less morning ten simple
several vowel toward war lay against pattern slow center love person money serve appear road map
rain rule govern pull cold notice voice unit power town fine certain fly fall lead cry dark
machine note wait plan figure star box noun field rest correct able pound done beauty drive
stood contain front teach week final gave green quick develop ocean warm free minute strong
special mind behind clear tail produce fact street inch multiply nothing course stay wheel full
force blue object decide surface deep moon island foot system busy test record boat common gold
possible plane stead dry wonder laugh thousand ago ran check game shape equate miss brought heat
snow tire bring yes distant fill east paint language among
"""
_WORDS = _WORD_TEXT.split()

#: Characters the grammar of a tool call needs; pushed down less than other single characters.
_JSON_CHARS = '{}":,[]0123456789'
_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ" + _JSON_CHARS + ".!?'-_ "
#: What the tool-call model's calls (``<function=NAME>{...}</function>``) need besides:
#: without them the grammar could spell the markers out of byte tokens only.
_TOOL_CHARS = "<>=/"

#: Output bias, in units of the (near-constant) normalised ``BIAS_DIM`` value.
_FAR_DOWN = -40.0
_CHAR_BIAS = -7.0
_JSON_CHAR_BIAS = -7.0
_PREFIX_BIAS = -7.0
_EOS_BIAS = 3.4
#: Spread of the random part of the output logits, and of the rest of the weights.
_OUT_SCALE = 0.19
_WEIGHT_SCALE = 0.1

#: ChatML; ``content: null`` (an assistant message with tool calls only) renders as empty.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] or '' }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

#: The tool-call model's template: tool calls in the Llama 3.1 / Functionary v3.1 style,
#: ``<function=NAME>{json}</function>``. llama-server (``--jinja``) renders the template with a
#: sample call, recognises that format, and with ``tool_choice: "required"`` constrains the
#: output to it from the first token. Two measured constraints shape it:
#:
#: * The turn headers are plain text that starts with a character no piece joins to the
#:   word-start marker (``[assistant]``). llama-server feeds the generation prompt, tokenized
#:   alone, to the grammar, and drops its first token when that is a space the prompt does not
#:   start with: ChatML's ``<|im_start|>assistant`` (a control token) and ``assistant:`` (whose
#:   first token is ``▁as``) both fail with 400 "Failed to initialize samplers".
#: * The tools are named, not described: their JSON schemas would cost about one token per
#:   character of a 512-token context.
TOOL_CHAT_TEMPLATE = (
    "{% if tools %}[system]\nTools:"
    "{% for tool in tools %} {{ tool['function']['name'] }}{% endfor %}<|im_end|>\n{% endif %}"
    "{% for message in messages %}"
    "[{{ message['role'] }}]\n"
    "{% if message['tool_calls'] %}"
    "{% for call in message['tool_calls'] %}"
    "<function={{ call['function']['name'] }}>"
    "{% if call['function']['arguments'] is string %}{{ call['function']['arguments'] }}"
    "{% else %}{{ call['function']['arguments'] | tojson }}{% endif %}</function>"
    "{% endfor %}"
    "{% else %}{{ message['content'] or '' }}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}[assistant]\n{% endif %}"
)


@dataclass(frozen=True, slots=True)
class TinyModel:
    """What a test needs to know about the written model.

    Attributes:
        path: The GGUF file.
        eos_token_id: Id of ``<|im_end|>``: ``{"logit_bias": {str(id): -100}}`` forces a reply
            to run to ``max_tokens``.
        words: The whole words the model's replies are made of.
    """

    path: Path
    eos_token_id: int
    words: tuple[str, ...]


def _vocabulary(chars: str) -> tuple[list[str], list[float], list[int], list[float]]:
    """Tokens (the single ``chars`` among them), their SentencePiece scores, their types, and
    their output bias."""
    tokens: list[str] = []
    scores: list[float] = []
    types: list[int] = []
    bias: list[float] = []

    def add(piece: str, score: float, kind: int, push: float) -> None:
        tokens.append(piece)
        scores.append(score)
        types.append(kind)
        bias.append(push)

    for piece, kind in _SPECIALS:
        add(piece, 0.0, kind, _EOS_BIAS if piece == EOS_TOKEN else _FAR_DOWN)
    for byte in range(256):
        add(f"<0x{byte:02X}>", 0.0, gguf.TokenType.BYTE, _FAR_DOWN)
    seen = set(tokens)
    for char in chars.replace(" ", "▁"):
        seen.add(char)
        push = _JSON_CHAR_BIAS if char in _JSON_CHARS else _CHAR_BIAS
        add(char, -1000.0, gguf.TokenType.NORMAL, push)
    words = {f"▁{word}" for word in _WORDS}
    for word in dict.fromkeys(_WORDS):  # keep the order, drop repeats
        piece = f"▁{word}"
        for end in range(2, len(piece) + 1):
            prefix = piece[:end]
            if prefix in seen:
                continue
            seen.add(prefix)
            # Longer pieces merge first, so the merges reach whole words.
            add(prefix, float(end), gguf.TokenType.NORMAL, 0.0 if prefix in words else _PREFIX_BIAS)
    return tokens, scores, types, bias


def write_tiny_model(path: Path, *, seed: int = 0, tool_calls: bool = False) -> TinyModel:
    """Write the tiny model to ``path`` (overwriting it); the same seed writes the same bytes.

    Args:
        path: Where to write the GGUF file.
        seed: Seeds every random weight.
        tool_calls: Write the tool-call variant instead: :data:`TOOL_CHAT_TEMPLATE` as its
            chat template, and the characters of its call markers in the vocabulary (so its
            weights differ from the plain model's for the same seed).

    Returns:
        The file and the facts tests need about it.
    """
    tokens, scores, types, bias = _vocabulary(_CHARS + _TOOL_CHARS if tool_calls else _CHARS)
    n_vocab = len(tokens)
    rng = np.random.default_rng(seed)

    def normal(*shape: int, scale: float = _WEIGHT_SCALE) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_name("llmtap-tiny-tools" if tool_calls else "llmtap-tiny")
    writer.add_context_length(N_CTX)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    eos = tokens.index(EOS_TOKEN)
    writer.add_unk_token_id(tokens.index("<unk>"))
    writer.add_bos_token_id(tokens.index("<s>"))
    writer.add_eos_token_id(eos)
    writer.add_eot_token_id(eos)
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    writer.add_chat_template(TOOL_CHAT_TEMPLATE if tool_calls else CHAT_TEMPLATE)

    # Token embeddings: random, except the bias dimension, the same constant everywhere.
    embeddings = normal(n_vocab, N_EMBD, scale=1.0)
    embeddings[:, BIAS_DIM] = 1.0
    writer.add_tensor("token_embd.weight", embeddings)
    ones = np.ones(N_EMBD, dtype=np.float32)
    for layer in range(N_LAYER):
        block = f"blk.{layer}"
        writer.add_tensor(f"{block}.attn_norm.weight", ones)
        writer.add_tensor(f"{block}.attn_q.weight", normal(N_EMBD, N_EMBD))
        writer.add_tensor(f"{block}.attn_k.weight", normal(N_EMBD, N_EMBD))
        writer.add_tensor(f"{block}.attn_v.weight", normal(N_EMBD, N_EMBD))
        attn_output = normal(N_EMBD, N_EMBD)  # (out, in); no layer writes into BIAS_DIM
        attn_output[BIAS_DIM, :] = 0.0
        writer.add_tensor(f"{block}.attn_output.weight", attn_output)
        writer.add_tensor(f"{block}.ffn_norm.weight", ones)
        writer.add_tensor(f"{block}.ffn_gate.weight", normal(N_FF, N_EMBD))
        writer.add_tensor(f"{block}.ffn_up.weight", normal(N_FF, N_EMBD))
        ffn_down = normal(N_EMBD, N_FF)
        ffn_down[BIAS_DIM, :] = 0.0
        writer.add_tensor(f"{block}.ffn_down.weight", ffn_down)
    writer.add_tensor("output_norm.weight", ones)
    output = normal(n_vocab, N_EMBD, scale=_OUT_SCALE)
    output[: len(_SPECIALS) + 256] = 0.0  # specials and bytes: the bias alone
    output[:, BIAS_DIM] = np.asarray(bias, dtype=np.float32)
    writer.add_tensor("output.weight", output)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    words = tuple(dict.fromkeys(_WORDS))
    return TinyModel(path=path, eos_token_id=eos, words=words)
