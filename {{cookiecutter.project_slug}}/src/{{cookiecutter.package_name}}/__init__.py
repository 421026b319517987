"""The {{ cookiecutter.package_name }} service."""
