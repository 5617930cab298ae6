"""gnostic's ``openapi.v2`` messages: the published schema and its generated module.

``OpenAPIv2.proto`` is google/gnostic-models' ``openapiv2/OpenAPIv2.proto``
(Apache 2.0, unchanged), the message schema Kubernetes serves OpenAPI v2 in.
``OpenAPIv2_pb2.py`` is generated from it, never edited; to regenerate::

    pip install grpcio-tools
    cd kubepy/api/openapiv2 && python -m grpc_tools.protoc -I. \\
        -I"$(python -c 'import grpc_tools, os; print(os.path.dirname(grpc_tools.__file__))')/_proto" \\
        --python_out=. OpenAPIv2.proto
"""
