"""The Function App: registers the blueprints in functions/; nothing else."""

import azure.functions as func

from functions.http import bp as http_bp
from functions.queues import bp as queues_bp
from functions.timer import bp as timer_bp

app = func.FunctionApp()
app.register_functions(timer_bp)
app.register_functions(queues_bp)
app.register_functions(http_bp)
