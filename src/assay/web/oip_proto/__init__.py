"""Generated protobuf and gRPC modules of the Open Inference Protocol's ``GRPCInferenceService``.

``grpc_service.proto`` is the source; ``grpc_service_pb2.py`` (messages),
``grpc_service_pb2.pyi`` (their types) and ``grpc_service_pb2_grpc.py`` (the
service) are generated from it by ``python -m assay.web.oip_proto.generate``
(grpcio-tools, a dev dependency) and checked in, so that installing
``assay[grpc]`` needs no compiler. A test regenerates them and fails when the
checked-in files differ.
"""
