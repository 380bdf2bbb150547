"""One flask-smorest blueprint per resource, each module named like its URL."""
