"""`horesnet card MODEL`: the Hub model card a push would publish (cards.py), printed or written."""
from ..cards import EVAL_KEYS, load_eval_record, published_record, render_card
from ..errors import UsageError
from ..fileio import atomic_output, output_directory
from ..measure import model_stats
from .arguments import add_model_arguments, load_from_args

__all__ = ['add_arguments', 'run']


def add_arguments(parser) -> None:
    add_model_arguments(parser)
    group = parser.add_argument_group('card')
    group.add_argument('-o', '--output', help='write the card to this file (default: print it)')
    group.add_argument('--repo-id', help='Hub repository the card is for (used in the usage snippets)')
    group.add_argument('--eval-json', help='evaluation record (JSON with ' + ', '.join(EVAL_KEYS)
                                           + '); the only way a metric gets into the card')
    group.add_argument('--dataset', action='append', default=[], help='Hub dataset id the weights were trained on')


def run(args) -> int:
    if args.output:
        output_directory(args.output)  # before the work
    record = load_eval_record(args.eval_json) if args.eval_json else None
    loaded = load_from_args(args)
    if record and not loaded.trained:
        raise UsageError(f"--eval-json records an evaluation of trained weights, and {loaded.architecture} has random "
                         f"ones: give the weights it measured (a checkpoint as MODEL, --checkpoint FILE or --pretrained)")
    record = record or published_record(loaded)
    stats = model_stats(loaded.architecture, input_size=loaded.model.pretrained_cfg['input_size'], activations=True,
                    **loaded.model_args)
    text = render_card(loaded.model, stats, args.repo_id, loaded.provenance, record, args.dataset)
    if args.output:
        with atomic_output(args.output) as tmp:
            tmp.write_text(text, encoding='utf-8')
        print(f'wrote {args.output}')
    else:
        print(text, end='')
    return 0
