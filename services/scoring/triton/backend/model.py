"""Python-based Triton backend `torchscript`: serves a version's model.pt on CPU.

Production runs the same file with the pytorch_libtorch backend on GPU. The model returns one
tensor or a tuple; its i-th element is the config's i-th output (score__0, contrib__1, ...).
DLPack both ways: under numpy 2 the python backend's numpy path silently returns zeros.
"""

import json
import os

import torch
import torch.utils.dlpack
import triton_python_backend_utils as pb_utils

# The model's interface (scoring/core/model_io.py), spelled out: this file runs inside Triton.
INPUT_NAME = "features__0"


class TritonPythonModel:
    def initialize(self, args):
        path = os.path.join(args["model_repository"], args["model_version"], "model.pt")
        config = json.loads(args["model_config"])
        # The libtorch backend's parameter (PARAM_INTRA_OP_THREADS): this process's threads.
        threads = config.get("parameters", {}).get("INTRA_OP_THREAD_COUNT", {}).get("string_value")
        if threads:
            torch.set_num_threads(int(threads))
        self.model = torch.jit.load(path, map_location="cpu").eval()
        self.outputs = [o["name"] for o in config["output"]]

    def execute(self, requests):
        # Dynamic batching hands several requests at once: one forward pass, then split.
        inputs = [
            torch.utils.dlpack.from_dlpack(
                pb_utils.get_input_tensor_by_name(request, INPUT_NAME).to_dlpack()
            )
            for request in requests
        ]
        sizes = [x.shape[0] for x in inputs]
        with torch.inference_mode():
            result = self.model(torch.cat(inputs) if len(inputs) > 1 else inputs[0])
        results = result if isinstance(result, (tuple, list)) else (result,)
        if len(results) != len(self.outputs):
            error = pb_utils.TritonError(
                f"model.pt returned {len(results)} outputs, the config declares {self.outputs}"
            )
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        parts = [torch.split(r, sizes) for r in results]
        responses = []
        for i in range(len(requests)):
            tensors = [
                pb_utils.Tensor.from_dlpack(
                    name, torch.utils.dlpack.to_dlpack(part[i].contiguous())
                )
                for name, part in zip(self.outputs, parts, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
