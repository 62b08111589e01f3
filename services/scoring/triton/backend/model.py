"""Python-based Triton backend `torchscript`: serves a version's model.pt on CPU.

Production runs the same file with the pytorch_libtorch backend on GPU. DLPack both ways:
under numpy 2 the python backend's numpy path silently returns zeros.
"""

import os

import torch
import torch.utils.dlpack
import triton_python_backend_utils as pb_utils

INPUT_NAME = "features__0"
OUTPUT_NAME = "score__0"


class TritonPythonModel:
    def initialize(self, args):
        path = os.path.join(args["model_repository"], args["model_version"], "model.pt")
        self.model = torch.jit.load(path, map_location="cpu").eval()

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
            scores = self.model(torch.cat(inputs) if len(inputs) > 1 else inputs[0])
        responses = []
        for part in torch.split(scores, sizes):
            tensor = pb_utils.Tensor.from_dlpack(
                OUTPUT_NAME, torch.utils.dlpack.to_dlpack(part.contiguous())
            )
            responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
        return responses
