from stream_app.llm import llm_response, stream_chat


async def ask(request):
    events = stream_chat([{"role": "user", "content": request.GET.get("q", "Hello")}])
    return await llm_response(request, events)
