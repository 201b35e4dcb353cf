"""The REST API under /api/v1/. Thin: validate, call a service or selector, shape the answer."""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import exceptions, permissions, status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from presence import contract, explain, selectors, services, wire
from presence.explain_serializers import PresenceExplanationSerializer
from presence.models import ManualStatus
from presence.serializers import (
    MAX_PEER_PAGE_SIZE,
    PEER_PAGE_SIZE,
    ApiErrorSerializer,
    CalendarSerializer,
    ConfigSerializer,
    DeviceRegistrationSerializer,
    DeviceSerializer,
    ManualStatusOutSerializer,
    ManualStatusSerializer,
    PeerPageQuerySerializer,
    PeerPageSerializer,
    PeerSerializer,
    PresenceSerializer,
    PrivacySerializer,
    SignalOutcomeSerializer,
)
from presence.vocabulary import Status

_ERROR_DESCRIPTIONS = {
    400: "Invalid input: `fields` names each offending field and why",
    401: "Not signed in, or the credentials are not valid",
    404: "Not found",
    409: "Classic mode: this deployment does not aggregate presence",
    413: "The request body is larger than the server takes (`REQUEST_BODY_MAX_BYTES`); nothing was applied",
    429: "Over a rate limit: nothing was applied; `Retry-After` (and `retry_after`) says when to retry",
}


def errors(*codes: int, **descriptions: str) -> dict[int, OpenApiResponse]:
    """Documented error answers, all in the API's error shape; `e404="No such device"` gives a
    code a description of its own. Every aggregated-mode endpoint can answer 401 and 409."""
    return {
        code: OpenApiResponse(ApiErrorSerializer, description=descriptions.get(f"e{code}", _ERROR_DESCRIPTIONS[code]))
        for code in sorted({401, 409, *codes})
    }


class AggregatorDisabled(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "aggregator_disabled"
    default_detail = (
        "This deployment uses classic mode: presence is not aggregated on the server. "
        "Clients publish presence to Matrix and Microsoft themselves."
    )


class AggregatorEnabled(permissions.BasePermission):
    def has_permission(self, request, view) -> bool:
        if not settings.PRESENCE_USE_AGGREGATOR:
            raise AggregatorDisabled()
        return True


class InputChangeThrottle(BaseThrottle):
    """A user's own changes of their inputs count against PRESENCE_RATE_LIMIT_STATUS (reads are
    free); over it, `RateLimited` is answered 429 with Retry-After."""

    def allow_request(self, request: Request, view: APIView) -> bool:
        if request.method not in permissions.SAFE_METHODS:
            services.count_input_change(request.user)
        return True


class PresenceAPIView(APIView):
    """Base of every aggregated-mode endpoint: signed in, and the deployment aggregates."""

    permission_classes = [permissions.IsAuthenticated, AggregatorEnabled]


class InputChangeView(PresenceAPIView):
    """An endpoint whose writes change the user's inputs: rate limited (`InputChangeThrottle`)."""

    throttle_classes = [InputChangeThrottle]


def _presence_response(state, http_status: int = status.HTTP_200_OK) -> Response:
    return Response(PresenceSerializer(state, context={"now": timezone.now()}).data, status=http_status)


def _device_not_found() -> exceptions.NotFound:
    return exceptions.NotFound(wire.NO_SUCH_DEVICE)


class ConfigView(APIView):
    permission_classes = [permissions.AllowAny]

    @extend_schema(responses={200: ConfigSerializer, 401: errors()[401]}, summary="How this deployment does presence")
    def get(self, request: Request) -> Response:
        device_timeout = settings.PRESENCE_DEVICE_TIMEOUT_SECONDS
        idle_timeout = settings.PRESENCE_IDLE_TIMEOUT_SECONDS
        if request.user.is_authenticated:
            policy = selectors.policy_of(selectors.organization_of(request.user))
            device_timeout = int(selectors.device_timeout_for(policy).total_seconds())
            idle_timeout = int(selectors.idle_timeout_for(policy).total_seconds())
        return Response(
            ConfigSerializer(
                {
                    "aggregator": settings.PRESENCE_USE_AGGREGATOR,
                    "server_dispatch": settings.PRESENCE_SERVER_DISPATCH,
                    "sse": settings.PRESENCE_USE_SSE,
                    "device_timeout_seconds": device_timeout,
                    "heartbeat_interval_seconds": settings.PRESENCE_HEARTBEAT_INTERVAL_SECONDS,
                    "idle_timeout_seconds": idle_timeout,
                }
            ).data
        )


class DeviceListView(InputChangeView):
    @extend_schema(responses={200: DeviceSerializer(many=True), **errors()}, summary="My signed-in devices")
    def get(self, request: Request) -> Response:
        return Response(DeviceSerializer(selectors.devices_of(request.user), many=True).data)

    @extend_schema(
        request=DeviceRegistrationSerializer,
        responses={201: DeviceSerializer, 200: DeviceSerializer, **errors(400, 413, 429)},
        summary="Sign a device in (201 new, 200 the same installation again)",
    )
    def post(self, request: Request) -> Response:
        serializer = DeviceRegistrationSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        device, created = services.register_device(
            request.user, serializer.validated_data["installation_id"], serializer.validated_data.get("label")
        )
        return Response(
            DeviceSerializer(device).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )


class DeviceDetailView(InputChangeView):
    @extend_schema(responses={204: None, **errors(404, 429, e404="No such device")}, summary="Sign out")
    def delete(self, request: Request, device_id: str) -> Response:
        if not services.possible_device_id(device_id):
            raise _device_not_found()
        try:
            services.sign_out_device(request.user, device_id)
        except services.DeviceNotFound:
            raise _device_not_found() from None
        return Response(status=status.HTTP_204_NO_CONTENT)


class SignalsView(PresenceAPIView):
    @extend_schema(
        request=contract.SignalBatch,
        responses={202: SignalOutcomeSerializer, **errors(400, 404, 413, 429, e404="No such device")},
        examples=[
            OpenApiExample("A heartbeat", value={"signals": [{"type": "heartbeat", "seq": 41}]}, request_only=True),
            OpenApiExample(
                "Back at the keyboard, in a call",
                value={
                    "signals": [
                        {"type": "activity", "value": "active", "seq": 42},
                        {"type": "call", "value": "start", "seq": 43},
                    ]
                },
                request_only=True,
            ),
        ],
        summary="Report device signals; answers with the user's presence",
    )
    def post(self, request: Request, device_id: str) -> Response:
        try:
            signals = wire.read_batch(request.data)
        except wire.Invalid as invalid:
            raise exceptions.ValidationError(invalid.fields) from None
        if not services.possible_device_id(device_id):
            raise _device_not_found()
        try:
            outcome = services.ingest_signals(request.user, device_id, signals)
        except services.DeviceNotFound:
            raise _device_not_found() from None
        body = wire.state_answer(outcome.presence, outcome.applied, outcome.ignored)
        return Response(body, status=status.HTTP_202_ACCEPTED)


class MyPresenceView(PresenceAPIView):
    @extend_schema(
        responses={200: PresenceSerializer, **errors()}, summary="My aggregated presence and the rule that decided it"
    )
    def get(self, request: Request) -> Response:
        return _presence_response(selectors.current_presence(request.user))


class MyPresenceExplanationView(PresenceAPIView):
    @extend_schema(
        responses={200: PresenceExplanationSerializer, **errors()},
        summary="Why my presence is what it is: the engine's inputs and each rule in order",
    )
    def get(self, request: Request) -> Response:
        return Response(explain.explain_user(request.user, timezone.now()))


class MyStatusView(InputChangeView):
    @extend_schema(
        responses={200: ManualStatusOutSerializer, **errors(404, e404="No manual status is set")},
        summary="My manual status (404 when none is set)",
    )
    def get(self, request: Request) -> Response:
        manual = ManualStatus.objects.filter(user=request.user).first()
        if manual is None or (manual.until is not None and manual.until <= timezone.now()):
            raise exceptions.NotFound("No manual status is set.")
        return Response(ManualStatusOutSerializer(manual).data)

    @extend_schema(
        request=ManualStatusSerializer,
        responses={200: PresenceSerializer, **errors(400, 413, 429)},
        examples=[
            OpenApiExample(
                "Busy for an hour",
                value={"status": "busy", "message": "Workshop", "duration_seconds": 3600},
                request_only=True,
            )
        ],
        summary="Set my manual status",
    )
    def put(self, request: Request) -> Response:
        policy = selectors.policy_of(selectors.organization_of(request.user))
        serializer = ManualStatusSerializer(data=request.data, context={"policy": policy})
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        state = services.set_manual_status(request.user, Status(data["status"]), data["message"], data["until"])
        return _presence_response(state)

    @extend_schema(responses={200: PresenceSerializer, **errors(429)}, summary="Clear my manual status")
    def delete(self, request: Request) -> Response:
        return _presence_response(services.clear_manual_status(request.user))


class MyCalendarView(InputChangeView):
    @extend_schema(responses={200: CalendarSerializer, **errors()}, summary="My calendar busy blocks")
    def get(self, request: Request) -> Response:
        blocks = selectors.calendar_of(request.user)
        return Response(CalendarSerializer({"blocks": [{"start": b.start, "end": b.end} for b in blocks]}).data)

    @extend_schema(
        request=CalendarSerializer,
        responses={200: PresenceSerializer, **errors(400, 413, 429)},
        examples=[
            OpenApiExample(
                "One meeting",
                value={"blocks": [{"start": "2026-11-25T14:00:00Z", "end": "2026-11-25T15:00:00Z"}]},
                request_only=True,
            )
        ],
        summary="Replace my busy blocks",
    )
    def put(self, request: Request) -> Response:
        serializer = CalendarSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        blocks = [(b["start"], b["end"]) for b in serializer.validated_data["blocks"]]
        return _presence_response(services.replace_calendar(request.user, blocks))


class MyPrivacyView(InputChangeView):
    def _context(self, request: Request) -> dict:
        return {"policy": selectors.policy_of(selectors.organization_of(request.user))}

    @extend_schema(responses={200: PrivacySerializer, **errors()}, summary="My Privacy → Presence (server) settings")
    def get(self, request: Request) -> Response:
        preferences = selectors.preferences_of(request.user)
        return Response(PrivacySerializer(preferences, context=self._context(request)).data)

    @extend_schema(
        request=PrivacySerializer,
        responses={200: PrivacySerializer, **errors(400, 413, 429)},
        summary="Change my presence settings",
    )
    def patch(self, request: Request) -> Response:
        context = self._context(request)
        serializer = PrivacySerializer(
            selectors.preferences_of(request.user), data=request.data, partial=True, context=context
        )
        serializer.is_valid(raise_exception=True)
        preferences = services.update_preferences(request.user, **serializer.validated_data)
        return Response(PrivacySerializer(preferences, context=context).data)


class PeerPagination(LimitOffsetPagination):
    """`?limit=&offset=`; a limit above `max_limit` is capped. The view checks the query first
    (`PeerPageQuerySerializer`): anything but a count is a 400, where DRF's own pagination would
    quietly fall back to the default."""

    default_limit = PEER_PAGE_SIZE
    max_limit = MAX_PEER_PAGE_SIZE


class PeerListView(PresenceAPIView):
    @extend_schema(
        parameters=[PeerPageQuerySerializer],
        responses={200: PeerPageSerializer, **errors(400)},
        operation_id="v1_peers_list",
        summary="Colleagues of my organization",
    )
    def get(self, request: Request) -> Response:
        query = PeerPageQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        colleagues = selectors.colleagues_of(request.user, query=query.validated_data.get("q", ""))
        paginator = PeerPagination()
        page = paginator.paginate_queryset(colleagues, request, view=self)
        now = timezone.now()
        context = {"states": selectors.fresh_presence_of(page, now), "now": now}
        return paginator.get_paginated_response(PeerSerializer(page, many=True, context=context).data)


class PeerDetailView(PresenceAPIView):
    @extend_schema(responses={200: PeerSerializer, **errors(404, e404="Not a colleague")})
    def get(self, request: Request, user_id: str) -> Response:
        peer = selectors.colleague(request.user, user_id)
        if peer is None:
            raise exceptions.NotFound("No such colleague.")
        now = timezone.now()
        context = {"states": selectors.fresh_presence_of([peer], now), "now": now}
        return Response(PeerSerializer(peer, context=context).data)
