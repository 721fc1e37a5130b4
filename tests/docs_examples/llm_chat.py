from django.views.decorators.http import require_POST

from stream_app.llm import create_generation, request_owner, stream_chat, stream_generation


@require_POST
async def chat(request):
    owner = await request_owner(request, create=True)
    generation = create_generation(owner)
    messages = [{"role": "user", "content": request.POST["q"]}]
    return await stream_generation(request, generation, stream_chat(messages))
