"""One flask-smorest blueprint per resource, each module named like its URL."""

from __future__ import annotations

import json
from typing import Any

import flask
import flask_smorest
from webargs.flaskparser import FlaskParser


class ArgumentsParser(FlaskParser):
    """webargs' Flask parser, with every undecodable JSON body answered as a 400."""

    def _raw_load_json(self, req: flask.Request) -> Any:
        try:
            return super()._raw_load_json(req)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise  # webargs answers these itself
        except (ValueError, RecursionError) as exc:
            # json.loads refuses a number over 4300 digits with a bare ValueError and deep
            # nesting with a RecursionError; neither is the server's fault.
            # The ignore: webargs annotates the error more narrowly than it handles it.
            self._handle_invalid_json_error(exc, req)  # type: ignore[arg-type]


class Blueprint(flask_smorest.Blueprint):
    """The blueprint every resource uses, so all of them parse requests the same way."""

    ARGUMENTS_PARSER = ArgumentsParser()
