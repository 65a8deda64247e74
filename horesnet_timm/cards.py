"""Model cards for the Hub, in the layout of timm's own cards, rendered from `hub_cards/model_card.md`.

Everything a card states is measured or recorded, never typed in: the stats are counted on the
model when the card is rendered, the scheme's tableau is printed from its exact coefficients, and
accuracy appears only from an evaluation record the caller passes (`EVAL_KEYS`). Without one the
card says where the weights came from and that they were not evaluated.
"""
import json
import math
import string
from pathlib import Path
from typing import Any, Dict, Optional

from .errors import HoresnetError
from .fileio import regular_file
from .models import cifar
from .schemes import get_scheme

__all__ = ['CardError', 'EVAL_KEYS', 'load_eval_record', 'published_record', 'tableau', 'render_card']

# an evaluation record: what was measured, on what, and how to reproduce it
EVAL_KEYS = ('dataset', 'split', 'top1', 'epochs', 'seed', 'command')
DEFAULT_REPO_ORG = 'ORG'  # placeholder owner when a card is rendered before a repository id is chosen


class CardError(HoresnetError, ValueError):
    """An evaluation record that cannot back a metric."""


def _template() -> str:
    try:  # installed: the wheel maps hub_cards/ to the package horesnet_timm.hub_cards
        from importlib.resources import files
        return files('horesnet_timm.hub_cards').joinpath('model_card.md').read_text(encoding='utf-8')
    except ModuleNotFoundError:  # a source checkout on sys.path
        return (Path(__file__).resolve().parents[1] / 'hub_cards' / 'model_card.md').read_text(encoding='utf-8')


def load_eval_record(path: str) -> Dict[str, Any]:
    """Read an evaluation record (JSON); refuse one that lacks any of EVAL_KEYS."""
    regular_file(path, 'evaluation record', CardError)
    try:
        record = json.loads(Path(path).read_text(encoding='utf-8'))
    except OSError as e:
        raise CardError(f"cannot read evaluation record '{path}': {e.strerror}") from e
    except ValueError as e:
        raise CardError(f"evaluation record '{path}' is not JSON ({e})") from e
    missing = [k for k in EVAL_KEYS if not isinstance(record, dict) or record.get(k) in (None, '')]
    if missing:
        raise CardError(f"evaluation record '{path}' lacks {', '.join(missing)}; a card reports a metric only "
                         f"with the dataset, split, epochs, seed and command that produced it")
    is_number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    for key in ('top1', 'top5'):
        if key in record and not (is_number(record[key]) and 0 <= record[key] <= 100):
            raise CardError(f"evaluation record '{path}': {key} {record[key]!r} is not a percentage (a number "
                            f"from 0 to 100)")
    if is_number(record.get('top5')) and record['top5'] < record['top1']:
        raise CardError(f"evaluation record '{path}': top5 {record['top5']!r} is below top1 {record['top1']!r}, which "
                        f"no evaluation gives (a top-1 hit is a top-5 hit)")
    for key, least in (('epochs', 1), ('seed', 0)):
        if not (isinstance(record[key], int) and not isinstance(record[key], bool) and record[key] >= least):
            raise CardError(f"evaluation record '{path}': {key} {record[key]!r} is not an integer >= {least}")
    for key in ('dataset', 'split'):  # one line each: they go into a table row and the front matter
        if not isinstance(record[key], str) or not record[key].isprintable():
            raise CardError(f"evaluation record '{path}': {key} {record[key]!r} is not one line of text")
    return record


def published_record(loaded) -> Optional[Dict[str, Any]]:
    """The evaluation record of a shipped pretrained tag (its eval.json), when `loaded` holds one's weights."""
    weights = loaded.model.pretrained_cfg.get('file') if loaded.trained else None
    if not weights or Path(weights).parent.parent != cifar.WEIGHTS or not (Path(weights).parent / 'eval.json').is_file():
        return None
    return load_eval_record(str(Path(weights).parent / 'eval.json'))


def tableau(scheme) -> str:
    """The Butcher tableau as text: rows `c_i | a_i1 .. a_i(i-1)`, a rule, then `| b_1 .. b_s`."""
    s = scheme.stages
    rows = [[str(scheme.c[i])] + [str(v) for v in scheme.a[i][:i]] for i in range(s)]
    rows.append([''] + [str(v) for v in scheme.b])
    width = [max(len(r[j]) for r in rows if j < len(r)) for j in range(s + 1)]
    line = lambda r: (r[0].rjust(width[0]) + ' | ' + '  '.join(v.ljust(w) for v, w in zip(r[1:], width[1:]))).rstrip()
    rule = '-' * (width[0] + 1) + '+' + '-' * (sum(width[1:]) + 2 * s - 1)
    return '\n'.join([line(r) for r in rows[:-1]] + [rule, line(rows[-1])])


def _scheme_text(model) -> Dict[str, str]:
    scheme = get_scheme(model.scheme)
    if scheme.multistep:
        explanation = (
            'Each block mixes in the previous block\'s input: u_{n+1} = (1 - k_n) u_n + k_n u_{n-1} + F_n(u_n), '
            'one learnable k_n per block (Lu et al. 2018);\nthe first block of a stage has no u_{n-1} and is '
            'a plain residual (Euler) step, whose one-stage tableau is below.')
    else:
        adaptive = any(getattr(m, 'step_size', None) is not None for m in model.modules())
        explanation = (
            f'Each block combines {scheme.stages} sub-networks F_i, each with its own weights, as an explicit '
            f'order-{scheme.order} Runge-Kutta step: k_i = F_i(x + h sum_j a_ij k_j), y = x + h sum_i b_i k_i;\n'
            + ('h is learned, one per block, initialised to 1 (the paper\'s "adaptive" variant).' if adaptive else
               'h = 1, so the block has exactly the weights of the same number of plain residual blocks.'))
    return dict(scheme_title=f'`{scheme.name}`, {scheme.title}', scheme_explanation=explanation,
                tableau=tableau(scheme))


def _summary(model, model_args: Dict[str, Any]) -> str:
    kind = 'LM-ResNet' if model.scheme == 'lm' else 'HO-ResNet'
    if getattr(model, 'restack_plan', None) is not None:  # a timm network restacked (horesnet_timm.restacking)
        return (f"timm's `{model_args.get('base')}` image classifier ({model.num_classes} classes) with its residual "
                f"blocks restacked by the `{model.scheme}` scheme ({kind} stacking), for timm with the "
                f"`horesnet-timm` package.")
    return (f"An {kind} image classifier ({model.num_classes} classes): residual sub-networks stacked by the "
            f"`{model.scheme}` scheme, for timm with the `horesnet-timm` package.")


def _front_matter(model, repo_id: str, datasets: list, eval_record: Optional[Dict[str, Any]]) -> str:
    """The card's YAML metadata, as huggingface_hub writes it (a model-index only from an evaluation record)."""
    from huggingface_hub import EvalResult, ModelCardData
    results = []
    if eval_record:
        dataset, split = str(eval_record['dataset']), str(eval_record['split']).split()[0]
        for key, name in (('top1', 'Top-1 accuracy'), ('top5', 'Top-5 accuracy')):
            if eval_record.get(key) is not None:
                results.append(EvalResult(task_type='image-classification', dataset_type=dataset, dataset_name=dataset,
                                          dataset_split=split, metric_type='accuracy', metric_name=name,
                                          metric_value=eval_record[key]))
    data = ModelCardData(
        library_name='timm', license=model.pretrained_cfg.get('license', 'apache-2.0'),
        pipeline_tag='image-classification', tags=['image-classification', 'timm', 'transformers'],
        datasets=datasets or None, model_name=repo_id.split('/')[-1] if results else None,
        eval_results=results or None)
    return data.to_yaml() + '\n'


def render_card(
        model,
        stats: Dict[str, Any],
        repo_id: Optional[str] = None,
        provenance: Optional[str] = None,
        eval_record: Optional[Dict[str, Any]] = None,
        datasets: Optional[list] = None,
        onnx_input: Optional[str] = None,
) -> str:
    """The README.md for `model` (a model made by `timm.create_model`, with its `_model_args`).

    stats: `measure.model_stats(...)` of the architecture, with activations, at its input size.

    provenance: one sentence on where the weights come from (default: untrained).
    eval_record: a dict with EVAL_KEYS (and optionally 'top5'); the only source of metrics.
    datasets: Hub dataset ids for the front matter (the evaluation record's dataset is added).
    onnx_input: the input of the model.onnx published beside the weights (name and shape), if any.
    """
    name = model.pretrained_cfg['architecture']
    model_args = {k: v for k, v in getattr(model, '_model_args', {}).items() if k not in ('device', 'dtype')}
    repo_id = repo_id or f'{DEFAULT_REPO_ORG}/{name}'
    datasets = list(dict.fromkeys([d.lower() for d in (datasets or [])]
                                  + ([str(eval_record['dataset']).lower()] if eval_record else [])))
    if eval_record:
        cells = [('Dataset', eval_record['dataset']), ('Split', eval_record['split']),
                 ('Top-1 (%)', eval_record['top1'])] + ([('Top-5 (%)', eval_record['top5'])]
                                                        if eval_record.get('top5') is not None else []) + [
            ('Epochs', eval_record['epochs']), ('Seed', eval_record['seed'])]
        evaluation = ('| ' + ' | '.join(k for k, _ in cells) + ' |\n|' + '---|' * len(cells) + '\n| '
                      + ' | '.join(str(v) for _, v in cells) + ' |\n\nReproduce with:\n\n```\n'
                      + str(eval_record['command']) + '\n```')
    else:
        evaluation = 'No evaluation of these weights was recorded, so this card reports no metric.'
    if onnx_input:
        onnx_usage = '\n'.join([
            'The repository holds `model.onnx`, exported from these weights and checked against them with '
            f'onnxruntime. Its input: {onnx_input}.', '', '```python', 'import onnxruntime as ort',
            'from huggingface_hub import hf_hub_download', '',
            f"session = ort.InferenceSession(hf_hub_download('{repo_id}', 'model.onnx'))",
            'x = transforms(img).unsqueeze(0).numpy()  # the transforms above',
            'logits = session.run(None, {session.get_inputs()[0].name: x})[0]', '```'])
    else:
        onnx_usage = 'This repository has no `model.onnx`; only the safetensors weights are published.'
    values = dict(
        front_matter=_front_matter(model, repo_id, datasets, eval_record),
        repo_name=repo_id.split('/')[-1], repo_id=repo_id, architecture=name,
        depth=f", depth {stats['depth']}" if stats.get('depth') else '', summary=_summary(model, model_args),
        model_args=' (' + ', '.join(f'{k}={v!r}' for k, v in model_args.items()) + ')' if model_args else '',
        params_m=f"{stats['params_m']:.2f}", gmacs=f"{stats['gmacs']:.2f}",
        activations_m=f"{stats['activations_m']:.2f}", image_size=stats['input_size'].replace('x', ' x '),
        provenance=provenance or 'untrained (random initialisation): this card describes the architecture only.',
        evaluation=evaluation, onnx_usage=onnx_usage, **_scheme_text(model),
    )
    return string.Template(_template()).substitute(values)
