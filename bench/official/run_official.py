"""Run the official FlatQuant main.py (a patched checkout, shared/anchors/official-flatquant)
on a local checkpoint directory: its --model accepts only listed names, so the directory
is added to that list before the parser is built. Usage: python run_official.py DIR ARGS..."""
import os
import sys

here = sys.argv[1]
sys.path.insert(0, here)
os.chdir(here)
import flatquant.args_utils as args_utils  # noqa: E402

model = sys.argv[sys.argv.index("--model") + 1]
args_utils.supported_models.append(model)
sys.argv = [os.path.join(here, "main.py")] + sys.argv[2:]
import main  # noqa: E402

main.main()
